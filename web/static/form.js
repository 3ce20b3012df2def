// The submit form: thumbnails of the chosen photo and guide, presets of the chosen model (a menu and
// a gallery), the model's defaults as placeholders, the fields of the chosen kind (a zoom video's),
// settings loaded from a dreamq result PNG, and submission through the API.

// Reading the settings a dreamq result PNG carries: an iTXt (or tEXt) chunk, keyword "dreamq",
// whose text is JSON (shared/provenance.py writes it).  No DOM here: node runs it in the tests.
var dreamqPng = (function () {
  "use strict";
  var SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
  var KEYWORD = "dreamq";

  function latin1(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += String.fromCharCode(bytes[i]);
    return out;
  }

  function zeroAt(bytes, from) {
    var i = bytes.indexOf(0, from);
    return i < 0 ? bytes.length : i;
  }

  // zlib-compressed iTXt text (compression flag 1): the browser's own inflate.
  function inflate(bytes) {
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
  }

  // The text of the first chunk with our keyword (a Promise of a string, or of null): the layout is
  // the 8-byte signature, then chunks of length (4, big-endian), type (4), data, CRC (4).
  function settingsText(buffer) {
    var bytes = new Uint8Array(buffer);
    if (bytes.length < 8 || SIGNATURE.some(function (b, i) { return bytes[i] !== b; })) return Promise.resolve(null);
    var view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (var pos = 8; pos + 12 <= bytes.length;) {
      var length = view.getUint32(pos);
      var type = latin1(bytes.subarray(pos + 4, pos + 8));
      var data = bytes.subarray(pos + 8, Math.min(pos + 8 + length, bytes.length));
      pos += 12 + length;
      if (type === "IEND") break;
      if (type !== "iTXt" && type !== "tEXt") continue;
      var end = zeroAt(data, 0);
      if (latin1(data.subarray(0, end)) !== KEYWORD) continue;
      if (type === "tEXt") return Promise.resolve(latin1(data.subarray(end + 1)));
      // iTXt: keyword \0 compression flag, method, language \0 translated keyword \0 text (UTF-8).
      var compressed = data[end + 1] === 1;
      var text = data.subarray(zeroAt(data, zeroAt(data, end + 3) + 1) + 1);
      return (compressed ? inflate(text) : Promise.resolve(text))
        .then(function (utf8) { return new TextDecoder("utf-8").decode(utf8); });
    }
    return Promise.resolve(null);
  }

  // The chunk's JSON ({kind, params, model, weights, version}), or null when there is none or it is not ours.
  function readSettings(buffer) {
    return settingsText(buffer).then(function (text) {
      if (text === null) return null;
      try {
        var found = JSON.parse(text);
        return found && typeof found.params === "object" && found.params ? found : null;
      } catch (e) {
        return null;
      }
    });
  }

  // A parameter as the form spells it (as web/pages.py form_value): layers as name=weight,...
  function formValue(name, value) {
    if (value === null || value === undefined) return name === "max_loss" ? "none" : "";
    if (typeof value === "object") {
      return Object.keys(value).map(function (k) { return k + "=" + formValue(k, value[k]); }).join(",");
    }
    return String(value);
  }

  // The chunk's settings as form values: every parameter, its kind and its model.
  function formValues(found) {
    var values = {};
    Object.keys(found.params).forEach(function (k) { values[k] = formValue(k, found.params[k]); });
    if (found.kind) values.kind = String(found.kind);
    if (found.model && !values.model) values.model = String(found.model);
    return values;
  }

  return { settingsText: settingsText, readSettings: readSettings, formValues: formValues };
})();
if (typeof module === "object" && module.exports) module.exports = dreamqPng;

(function () {
  "use strict";
  if (typeof document === "undefined") return;
  var form = document.getElementById("dream-form");
  if (!form) return;
  var catalog = JSON.parse(document.getElementById("catalog").textContent);
  var image = document.getElementById("image");
  var thumb = document.getElementById("thumb");
  var model = document.getElementById("model");
  var preset = document.getElementById("preset");
  var formError = document.getElementById("form-error");
  var kinds = JSON.parse(document.getElementById("kinds").textContent);
  var kind = document.getElementById("kind");
  var guide = document.getElementById("guide");
  var gallery = document.getElementById("preset-gallery");
  // Not parameters: what the filling of settings leaves alone.
  var NOT_PARAMS = ["image", "guide", "kind", "model"];

  function thumbnail(input, img) {
    input.addEventListener("change", function () {
      if (img.src) URL.revokeObjectURL(img.src);
      var file = input.files[0];
      img.hidden = !file;
      if (file) img.src = URL.createObjectURL(file);
    });
    // A file the browser cannot show (not an image): no broken thumbnail beside the error.
    img.addEventListener("error", function () { img.hidden = true; });
  }
  thumbnail(image, thumb);
  thumbnail(guide, document.getElementById("guide-thumb"));

  // The fields of the chosen kind only: the others are hidden and disabled (a disabled field is not sent).
  function showKind() {
    var k = kinds[kind.value] || { fields: [], guide: false };
    var box = document.getElementById("kind-fields");
    if (box) {
      var any = false;
      box.querySelectorAll("[data-kinds]").forEach(function (el) {
        var on = el.dataset.kinds.split(" ").indexOf(kind.value) >= 0;
        el.hidden = !on;
        el.querySelectorAll("input, select").forEach(function (input) { input.disabled = !on; });
        any = any || on;
      });
      box.hidden = !any;
    }
    var guideField = document.getElementById("guide-field");
    guideField.hidden = !k.guide;
    guide.disabled = !k.guide;
  }

  function presetParams() {
    return (catalog[model.value].preset_params || {})[preset.value] || {};
  }

  // Placeholders: the model's defaults, the kind's own on top (a zoom frame has fewer steps), the
  // model's own for that kind, then the preset's values (as the parameters merge them).
  function showDefaults() {
    var defaults = Object.assign({}, catalog[model.value].defaults, (kinds[kind.value] || {}).defaults || {},
      (catalog[model.value].kind_defaults || {})[kind.value] || {}, presetParams());
    Object.keys(defaults).forEach(function (name) {
      var input = document.getElementById(name);
      if (input && input.tagName === "INPUT") input.placeholder = defaults[name];
    });
  }
  kind.addEventListener("change", function () { showKind(); showDefaults(); });
  showKind();

  function showGallery() {
    if (!gallery) return;
    gallery.querySelectorAll(".preset-cards").forEach(function (group) {
      var mine = group.dataset.model === model.value;
      group.hidden = !mine;
      group.querySelectorAll(".preset-card").forEach(function (card) {
        card.setAttribute("aria-pressed", String(mine && card.dataset.preset === preset.value));
      });
    });
  }

  function showModel() {
    Array.prototype.forEach.call(preset.options, function (opt) {
      var other = opt.dataset.model && opt.dataset.model !== model.value;
      opt.hidden = opt.disabled = !!other;
      if (other && opt.selected) preset.value = "";
    });
    showDefaults();
    showGallery();
  }
  model.addEventListener("change", showModel);
  showModel();

  // A select's option of this value that the chosen model offers (presets of two models share names).
  function choose(select, value) {
    var match = Array.prototype.find.call(select.options, function (o) { return o.value === value && !o.disabled; });
    select.selectedIndex = match ? match.index : 0;
    return !!match;
  }

  // Choosing a preset empties the fields presets decide (layers, step, max loss, and what any preset of
  // the model sets), so that the preset shows through instead of values typed or filled in before.
  function presetChosen() {
    var decided = ["layers", "step", "max_loss"];
    var all = catalog[model.value].preset_params || {};
    Object.keys(all).forEach(function (p) { decided = decided.concat(Object.keys(all[p])); });
    decided.forEach(function (name) {
      var input = document.getElementById(name);
      if (input && input.tagName === "INPUT") input.value = "";
    });
    showDefaults();
    showGallery();
  }
  preset.addEventListener("change", presetChosen);
  if (gallery) {
    gallery.hidden = false;
    gallery.addEventListener("click", function (event) {
      var card = event.target.closest(".preset-card");
      if (!card || !choose(preset, card.dataset.preset)) return;
      presetChosen();
    });
  }

  // Fill the form with settings (form values by field name), as "Dream again" does on the server:
  // every parameter field emptied first, then set.  Returns [loaded names, names the form lacks].
  function fill(values) {
    var loaded = [], ignored = [];
    if (kinds[values.kind]) { kind.value = values.kind; loaded.push("kind"); }
    if (catalog[values.model]) { model.value = values.model; loaded.push("model"); }
    showKind();
    showModel();
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || NOT_PARAMS.indexOf(el.name) >= 0) return;
      if (el.tagName === "SELECT") el.selectedIndex = 0; else el.value = "";
    });
    Object.keys(values).forEach(function (name) {
      if (name === "kind" || name === "model") return;
      var el = form.elements.namedItem(name);
      if (!el || !el.name || NOT_PARAMS.indexOf(name) >= 0) { if (values[name] !== "") ignored.push(name); return; }
      if (el.tagName === "SELECT") {
        // A default has no option of its own (the first, empty one stands for it): loaded all the same.
        if (!choose(el, values[name]) && values[name] !== "" && el.dataset.default !== values[name]) ignored.push(name);
        else if (values[name] !== "") loaded.push(name);
      } else {
        el.value = values[name];
        if (values[name] !== "") loaded.push(name);
      }
    });
    showDefaults();
    showGallery();
    form.querySelector("details").open = true;
    return [loaded, ignored];
  }

  // Loading settings from a dreamq PNG: the separate control loads at once; a PNG picked as the photo
  // only offers to (it may be a result to dream on with other settings).
  var settingsBox = document.getElementById("settings-drop");
  var settingsFile = document.getElementById("settings-file");
  var note = document.getElementById("settings-note");
  var photoOffer = document.getElementById("photo-settings");
  var offered = null;

  function loadFrom(file) {
    return file.arrayBuffer().then(dreamqPng.readSettings).catch(function () { return null; });
  }

  function apply(found, name, tail) {
    var values = dreamqPng.formValues(found);
    var result = fill(values);
    var said = result[0].map(function (n) { return n + " " + values[n]; });
    note.textContent = "Loaded from " + name + (found.version ? " (dreamq " + found.version + ")" : "") + ": " +
      said.join(", ") + "." + (result[1].length ? " Not used here: " + result[1].join(", ") + "." : "") +
      (tail || "");
  }

  function loadSettings(file) {
    if (!file) return;
    loadFrom(file).then(function (found) {
      if (found) apply(found, file.name, " Attach the photo to dream on.");
      else note.textContent = file.name + " carries no dreamq settings (only results saved by dreamq do).";
    });
  }

  if (settingsBox) {
    settingsBox.hidden = false;
    settingsFile.addEventListener("change", function () { loadSettings(settingsFile.files[0]); });
    settingsBox.addEventListener("dragover", function (event) { event.preventDefault(); });
    settingsBox.addEventListener("drop", function (event) {
      event.preventDefault();
      loadSettings(event.dataTransfer.files[0]);
    });
  }

  image.addEventListener("change", function () {
    var file = image.files[0];
    offered = null;
    photoOffer.hidden = true;
    if (!file || file.type !== "image/png") return;
    loadFrom(file).then(function (found) {
      if (image.files[0] !== file) return;  // another photo was picked meanwhile
      offered = found && { found: found, name: file.name };
      photoOffer.hidden = !found;
    });
  });
  document.getElementById("photo-settings-load").addEventListener("click", function () {
    if (offered) apply(offered.found, offered.name);
    photoOffer.hidden = true;
  });

  function showErrors(error) {
    formError.textContent = error.message || "The request failed.";
    formError.hidden = false;
    var fields = error.fields || {};
    document.querySelectorAll(".field-error").forEach(function (el) {
      var words = fields[el.dataset.for] || "";
      // Said once: a field's message that repeats the top one stays only at the top.
      el.textContent = words === formError.textContent ? "" : words;
    });
    var outside = ["image", "model", "preset", "kind", "guide"].concat(
      Object.keys(kinds).reduce(function (all, k) { return all.concat(kinds[k].fields); }, []));
    if (Object.keys(fields).some(function (f) { return outside.indexOf(f) < 0; })) {
      form.querySelector("details").open = true;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    fetch("/submit.json", { method: "POST", body: new FormData(form), credentials: "same-origin" })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; },
          function () { return { ok: false, body: { error: { message: "HTTP " + response.status } } }; });
      })
      .then(function (r) {
        if (r.ok) { window.location.href = "/jobs/" + encodeURIComponent(r.body.id); return; }
        showErrors(r.body.error || {});
        button.disabled = false;
      })
      .catch(function () {
        showErrors({ message: "The server could not be reached; try again." });
        button.disabled = false;
      });
  });
})();
