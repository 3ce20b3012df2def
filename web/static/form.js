// The submit form: thumbnail of the chosen photo, presets of the chosen model,
// the model's defaults as placeholders, and submission through the API.
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

  image.addEventListener("change", function () {
    if (thumb.src) URL.revokeObjectURL(thumb.src);
    var file = image.files[0];
    thumb.hidden = !file;
    if (file) thumb.src = URL.createObjectURL(file);
  });

  function showModel() {
    var m = catalog[model.value];
    Array.prototype.forEach.call(preset.options, function (opt) {
      var other = opt.dataset.model && opt.dataset.model !== model.value;
      opt.hidden = opt.disabled = !!other;
      if (other && opt.selected) preset.value = "";
    });
    Object.keys(m.defaults).forEach(function (name) {
      var input = document.getElementById(name);
      if (input) input.placeholder = m.defaults[name];
    });
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
    if (Object.keys(fields).some(function (f) { return ["image", "model", "preset"].indexOf(f) < 0; })) {
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
