// The submit form: thumbnails of the chosen photo and guide, presets of the chosen model,
// the model's defaults as placeholders, the fields of the chosen kind (a zoom video's),
// and submission through the API.
(function () {
  "use strict";
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

  function thumbnail(input, img) {
    input.addEventListener("change", function () {
      if (img.src) URL.revokeObjectURL(img.src);
      var file = input.files[0];
      img.hidden = !file;
      if (file) img.src = URL.createObjectURL(file);
    });
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

  // Placeholders: the model's defaults, with the kind's own on top (a zoom frame has fewer steps).
  function showDefaults() {
    var defaults = Object.assign({}, catalog[model.value].defaults, (kinds[kind.value] || {}).defaults || {});
    Object.keys(defaults).forEach(function (name) {
      var input = document.getElementById(name);
      if (input && input.tagName === "INPUT") input.placeholder = defaults[name];
    });
  }
  kind.addEventListener("change", function () { showKind(); showDefaults(); });
  showKind();

  function showModel() {
    Array.prototype.forEach.call(preset.options, function (opt) {
      var other = opt.dataset.model && opt.dataset.model !== model.value;
      opt.hidden = opt.disabled = !!other;
      if (other && opt.selected) preset.value = "";
    });
    showDefaults();
  }
  model.addEventListener("change", showModel);
  showModel();

  function showErrors(error) {
    formError.textContent = error.message || "The request failed.";
    formError.hidden = false;
    var fields = error.fields || {};
    document.querySelectorAll(".field-error").forEach(function (el) {
      el.textContent = fields[el.dataset.for] || "";
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
