// A job's page: polls the API once a second and updates progress, preview and result;
// for a video (kind=zoom) also the frame counter and the latest finished frame.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box) return;
  var api = box.dataset.api;
  var video = !!box.dataset.video;
  var $ = function (id) { return document.getElementById(id); };
  var lastPreview = null;
  var lastFrame = null;
  // The server's clock less ours, so that "running for" counts from the server's start time.
  var offset = Number(box.dataset.now) * 1000 - Date.now();
  var WORDS = {
    canceled: "The job was canceled.",
    timeout: "The dream took longer than the time limit.",
    worker_lost: "The workers running this job kept disappearing.",
  };

  // Frames done: the server links the latest finished frame, /jobs/<id>/frames/<n>.
  function framesDone(job) {
    var link = job.links.frame;
    if (!link) return 0;
    return parseInt(link.slice(link.lastIndexOf("/") + 1), 10) + 1;
  }

  function detail(job) {
    var p = job.progress, parts = [];
    if (job.status === "queued" && job.queue_position) parts.push("waiting: number " + job.queue_position + " in the queue");
    if (job.status === "running" && video && p.frames) {
      parts.push("frame " + Math.min(framesDone(job) + 1, p.frames) + "/" + p.frames);
    }
    if (p.octave !== null && p.octave !== undefined && job.status === "running") {
      parts.push("octave " + (p.octave + 1) + "/" + p.octaves + ", step " + ((p.step || 0) + 1) + "/" + p.steps);
      if (p.loss !== null && p.loss !== undefined) parts.push("loss " + p.loss.toFixed(2));
    }
    if (job.status === "running" && p.eta_s) parts.push("about " + Math.round(p.eta_s) + " s left");
    if (job.status === "succeeded" && job.metrics.run_s) {
      parts.push("done in " + job.metrics.run_s.toFixed(1) + " s" + (job.metrics.precision ? " (" + job.metrics.precision + ")" : ""));
    }
    return parts.join(", ");
  }

  // Seconds in words, as the page says them (web/pages.py duration).
  function duration(s) {
    if (s < 60) return s.toFixed(1) + " s";
    var minutes = Math.floor(s / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(s % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function at(iso) { return iso ? Date.parse(iso) / 1000 : null; }

  // [id, label, words] of how long the job waited and ran: web/pages.py timing_facts, live.
  function timing(job, finished) {
    var m = job.metrics || {}, now = (Date.now() + offset) / 1000, rows = [];
    if (m.cached) return [["answered", "Answered", "at once, from the result cache"]];
    var queued = m.queue_s;
    if (queued === null || queued === undefined) {
      queued = (at(job.started_at) || at(job.finished_at) || now) - at(job.created_at);
    }
    rows.push(["queued", job.status === "queued" ? "Queued for (so far)" : "Queued for", duration(Math.max(0, queued))]);
    if (job.started_at) {
      var ran = m.run_s;
      if (ran === null || ran === undefined) ran = (at(job.finished_at) || now) - at(job.started_at);
      rows.push(["ran", finished ? "Ran for" : "Running for (so far)",
                 duration(Math.max(0, ran)) + (m.dream_s ? " (dreaming " + duration(m.dream_s) + ")" : "")]);
    }
    return rows;
  }

  function renderTiming(job, finished) {
    var items = [];
    timing(job, finished).forEach(function (row) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.id = "timing-" + row[0] + "-label";
      dt.textContent = row[1];
      dd.id = "timing-" + row[0];
      dd.textContent = row[2];
      items.push(dt, dd);
    });
    $("timing").replaceChildren.apply($("timing"), items);
  }

  function frameLinks(done) {
    var nav = $("frame-links");
    if (!nav || nav.dataset.shown === String(done)) return;
    nav.dataset.shown = String(done);
    var items = [document.createTextNode("Finished frames: ")];
    for (var n = 0; n < done; n++) {
      var a = document.createElement("a");
      a.href = api + "/frames/" + n;
      a.textContent = String(n);
      items.push(a, document.createTextNode(" "));
    }
    nav.replaceChildren.apply(nav, items);
    nav.hidden = done === 0;
  }

  function renderFrames(job, finished) {
    var done = framesDone(job);
    $("frames-done").textContent = String(done);
    if (job.progress.frames) $("frames-total").textContent = String(job.progress.frames);
    if (job.links.frame && job.links.frame !== lastFrame && job.status !== "succeeded") {
      lastFrame = job.links.frame;
      $("frame").src = job.links.frame;
      $("frame-caption").textContent = "Frame " + (done - 1) + ", the latest finished";
      $("frame-box").hidden = false;
    }
    // A video that ended without its result (canceled, failed) keeps what it made: its frames.
    if (finished && job.status !== "succeeded") frameLinks(done);
    if (job.status === "succeeded") $("frame-box").hidden = true;
  }

  function render(job) {
    var finished = ["succeeded", "failed", "canceled"].indexOf(job.status) >= 0;
    $("status").textContent = job.status;
    $("status").className = "status status-" + job.status;
    $("position").textContent = "";
    $("bar").value = job.progress.fraction || 0;
    $("detail").textContent = detail(job);
    $("cancel").hidden = finished;
    var warnings = job.warnings || [];
    if (warnings.join("\n") !== $("warnings").dataset.shown) {  // rebuilt only when they change
      $("warnings").dataset.shown = warnings.join("\n");
      $("warnings").replaceChildren.apply($("warnings"), warnings.map(function (w) {
        var li = document.createElement("li");
        li.textContent = w;
        return li;
      }));
      $("warnings-box").hidden = warnings.length === 0;
    }
    renderTiming(job, finished);
    var precision = job.metrics && job.metrics.precision;
    if (precision) {  // what really ran is known once the worker says so
      var asked = job.params.precision;
      $("param-precision").textContent = precision + (asked && asked !== precision ? " (asked " + asked + ")" : "");
    }
    if (job.error && job.status !== "canceled") {
      $("error").textContent = "The dream failed: " + (WORDS[job.error.code] || job.error.message);
      $("error").hidden = false;
    } else if (job.status === "canceled") {
      $("error").textContent = WORDS.canceled;
      $("error").hidden = false;
    }
    if (video) renderFrames(job, finished);
    var version = job.progress.frame + ":" + job.progress.octave + ":" + job.status;
    if (job.links.preview && job.status !== "succeeded" && version !== lastPreview) {
      lastPreview = version;
      $("preview").src = job.links.preview + "?v=" + encodeURIComponent(version);
      $("preview-box").hidden = false;
    }
    if (finished && job.status !== "succeeded" && video) $("preview-box").hidden = true;  // frames say more
    if (job.status === "succeeded" && job.links.result) {
      // <video> or <img>: either loads from src (a video by byte ranges, as it plays).
      if (!$("result").getAttribute("src")) $("result").src = job.links.result;
      $("result-box").hidden = false;
      $("preview-box").hidden = true;
    }
    return finished;
  }

  function poll() {
    fetch(api + "/status.json", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (job) { if (!render(job)) setTimeout(poll, 1000); })
      .catch(function () { setTimeout(poll, 3000); });
  }

  $("cancel").addEventListener("submit", function (event) {
    event.preventDefault();
    // The page's cancel answers with a redirect to this page; the state is then read as usual.
    fetch(api + "/cancel", { method: "POST", credentials: "same-origin" }).then(poll, poll);
  });

  if (["queued", "running"].indexOf(box.dataset.status) >= 0) poll();
})();
