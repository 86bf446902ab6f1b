/* Car VAE page: three panels over the JSON API (see handler.py for the routes).
 * Plain jQuery, no build step. Images come back as base64 PNG strings. */
(function ($) {
  "use strict";

  // ?api=URL wins over config.js (written by the local server or the S3 publisher).
  const API = (new URLSearchParams(location.search).get("api") ||
               (window.CAR_VAE_CONFIG || {}).apiBaseUrl || "").trim().replace(/\/+$/, "");
  // Without a usable address the page sends nothing: no picker, drop or button calls out.
  const API_OK = /^https?:\/\/./i.test(API);

  // Refined from GET /health: Lambda takes 6 MB of event, in which the upload is base64 (4/3 larger);
  // the service refuses images of more pixels than maxPixels (MAX_IMAGE_PIXELS).
  const limits = { maxBodyBytes: Math.floor((6 * 1024 - 64) * 1024 * 3 / 4), maxPixels: 40000000 };

  // Photos straight off a phone are several MB while the model looks at ~128 px: files
  // over SHRINK_ABOVE, or of more pixels than the service takes, are scaled down in the
  // browser before upload (faster, and under the body limit, which on AWS counts the
  // upload base64-encoded, i.e. 4/3 larger).
  const SHRINK_ABOVE = 2 * 1024 * 1024;
  const SHRINK_TO = 1024;

  // Until /health first answers, it is asked again this often (the page opened while the API was down).
  const HEALTH_RETRY_MS = 5000;

  // notApi: the address answered, but not as this API would (a 404, a page): a wrong ?api= or config.js.
  // unreachable: no answer at all (status 0: offline, down, timed out), cleared once the service answers.
  class ApiError extends Error {
    constructor(message, status, notApi) {
      super(message);
      this.status = status;
      this.notApi = Boolean(notApi);
      this.unreachable = status === 0;
    }
  }

  // Formats browsers show but the service cannot read, by MIME type or file name.
  const UNSUPPORTED = /^image\/(heic|heif)$|\.(heic|heif)$/i;
  // What the service reads, by MIME type or file name (some systems give no type).
  const ACCEPTED = /^image\/(jpeg|png|webp)$|\.(jpe?g|png|webp)$/i;
  const PHOTO_LABELS = { image: "The photo", a: "The first car's photo", b: "The second car's photo" };

  const png = (b64) => "data:image/png;base64," + b64;
  const mb = (bytes) => (bytes / (1024 * 1024)).toFixed(2) + " MiB";
  // A file name's stem, safe for a download's name.
  const stem = (name) =>
    String(name || "photo").replace(/\.[^.]*$/, "").replace(/[^\w-]+/g, "-").slice(0, 40) || "photo";

  // The API writes messages in lower case for embedding; show them as sentences.
  function sentence(text) {
    text = String(text).trim();
    return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
  }

  /* One API call. Resolves with the parsed JSON body; rejects with an ApiError whose
   * message is fit to show (the API's own message when it sent one). */
  function call(method, path, data) {
    const options = { url: API + path, method: method, dataType: "text", timeout: 90000 };
    if (data instanceof FormData) {
      Object.assign(options, { data: data, processData: false, contentType: false });
    } else if (data) {
      Object.assign(options, { data: JSON.stringify(data), contentType: "application/json" });
    }
    return new Promise((resolve, reject) => {
      $.ajax(options)
        .done((text, _status, xhr) => {
          const body = parseJson(text);
          if (body && typeof body === "object") {
            answered(path);
            resolve(body);
          } else {
            reject(new ApiError(`The server sent an unexpected reply (HTTP ${xhr.status}). Please try again later.`,
                                xhr.status, true));
          }
        })
        .fail((xhr, status) => {
          const body = parseJson(xhr.responseText);
          const ours = Boolean(body && body.error && body.error.message);
          if (ours) answered(path);
          // 404, or API Gateway's 403 for a path it has no route for: most likely not this API's address.
          const elsewhere = (xhr.status === 404 || xhr.status === 403) && !ours;
          reject(new ApiError(failureMessage(xhr, status, body), xhr.status, elsewhere));
        });
    });
  }

  // The service answers: "could not reach" errors are out of date in every panel, and the banner too.
  function answered(path) {
    $(".error.unreachable").each(function () { $(this).removeClass("unreachable").text("").prop("hidden", true); });
    if (!connected && path !== "/health") loadHealth();
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function failureMessage(xhr, status, body) {
    if (status === "timeout") return "The server took too long to answer. Please try again in a moment.";
    // Status 0: no answer at all (offline, server down, DNS, or a CORS refusal).
    if (xhr.status === 0) return `Could not reach the service at ${API}. Check your connection and try again.`;
    if (body && body.error && body.error.message) {
      // A server failure asks to quote the request id: show it.
      const id = xhr.status >= 500 && body.request_id ? ` (request id: ${body.request_id})` : "";
      // Of two photos the service names the bad one "photo a" / "photo b": use the page's words.
      const message = String(body.error.message)
        .replace(/^photo ([ab]):\s*/i, (_m, slot) => PHOTO_LABELS[slot.toLowerCase()] + ": ");
      return sentence(message) + id;
    }
    if (xhr.status === 413) return "The upload is too large. Please choose a smaller photo.";
    return `The server sent an unexpected reply (HTTP ${xhr.status}). Please try again later.`;
  }

  // Errors from our own code (say, a reply missing a field) get a generic message.
  function messageOf(error) {
    if (error instanceof ApiError) return error.message;
    console.error(error);
    return "Something went wrong while showing the result. Please try again.";
  }

  // unreachable: an error that goes away by itself once the service answers (see answered).
  function showError(panel, message, unreachable) {
    $(panel ? `#${panel}-error` : "#error").text(message || "").prop("hidden", !message)
      .toggleClass("unreachable", Boolean(message && unreachable));
  }

  function showFailure(panel, error, note) {
    showError(panel, messageOf(error) + (note || ""), error instanceof ApiError && error.unreachable);
  }

  // The panel the user was last in (focus or pointer), so that a request finishing in one
  // panel never pulls focus out of another.
  let lastPanel = null;

  // While a panel's request runs: controls disabled, spinner shown. Disabling the focused
  // control drops keyboard focus to the page, so it is given back afterwards, unless the
  // user has moved on to another panel meanwhile.
  function setBusy(panel, on) {
    const $panel = $("#" + panel);
    if (on) $panel.data("focus", document.activeElement);
    $panel.toggleClass("busy", on).attr("aria-busy", String(on));
    $panel.find("input, button").prop("disabled", on || !API_OK);
    // The status stays rendered (empty when idle): a live region announces what is added to it.
    $(`#${panel}-status`).empty().append(on ? [$("<span>", { class: "spinner" }), "Working…"] : []);
    if (!on) {
      updateMorphButton();
      const focused = $panel.data("focus");
      if (focused && $.contains($panel[0], focused) && document.activeElement === document.body &&
          lastPanel === panel) focused.focus();
    }
  }

  // The image's size in pixels, or null when the browser cannot read it. An <img> knows its
  // size from the header, without decoding all the pixels.
  function imageSize(file) {
    return new Promise((resolve) => {
      const img = new Image(), url = URL.createObjectURL(file);
      img.onload = () => { URL.revokeObjectURL(url); resolve({ width: img.naturalWidth, height: img.naturalHeight }); };
      img.onerror = () => { URL.revokeObjectURL(url); resolve(null); };
      img.src = url;
    });
  }

  /* Scales a big photo (in bytes or in pixels) down (on white, like the server does with
   * transparency) and returns a JPEG blob. A small file the browser cannot decode is sent
   * as-is so that the server can say what is wrong with it; a large one could not be sent. */
  async function shrink(file, label) {
    const size = await imageSize(file);
    if (!size) {
      if (file.size > limits.maxBodyBytes) {
        throw new ApiError(`${label} is not a readable image. Please choose a JPEG, PNG or WebP photo.`);
      }
      return file;
    }
    const tooBig = file.size > SHRINK_ABOVE || size.width * size.height > limits.maxPixels;
    if (!tooBig || !window.createImageBitmap) return file;
    try {
      const bitmap = await createImageBitmap(file); // EXIF orientation applied
      const scale = Math.min(1, SHRINK_TO / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      const context = canvas.getContext("2d");
      context.fillStyle = "#fff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
      return blob || file;
    } catch (e) {
      return file;
    }
  }

  function heicMessage(label) {
    return `${label} is HEIC, which the service cannot read. Please send a JPEG, PNG or WebP ` +
           "(an iPhone saves JPEGs with Settings › Camera › Formats › Most Compatible).";
  }

  const isHeic = (file) => UNSUPPORTED.test(file.type) || UNSUPPORTED.test(file.name || "");

  async function photoForm(fields) {
    const form = new FormData();
    let total = 0;
    for (const [name, value] of Object.entries(fields)) {
      if (value instanceof Blob && isHeic(value)) throw new ApiError(heicMessage(PHOTO_LABELS[name] || "The photo"));
    }
    for (const [name, value] of Object.entries(fields)) {
      if (value instanceof Blob) {
        const blob = await shrink(value, PHOTO_LABELS[name] || "The photo");
        total += blob.size;
        form.append(name, blob, value.name || name);
      } else {
        form.append(name, value);
      }
    }
    if (total > limits.maxBodyBytes) {
      throw new ApiError(`The upload is ${mb(total)}; the limit is ${mb(limits.maxBodyBytes)}. Please choose a smaller photo.`);
    }
    return form;
  }

  // A file picker inside a drop zone; both hand the chosen file to onFile.
  function fileInput(zone, onFile) {
    const $zone = $(zone);
    $zone.on("dragenter dragover", (e) => {
      e.preventDefault();
      $zone.addClass("over");
    }).on("dragleave drop", () => $zone.removeClass("over"))
      .on("drop", (e) => {
        e.preventDefault();
        const file = e.originalEvent.dataTransfer.files[0];
        const $panel = $zone.closest(".panel");
        if (!file || !API_OK) return;
        if ($panel.hasClass("busy")) {
          // Say why nothing happens rather than dropping the file silently.
          const $status = $(`#${$panel.attr("id")}-status`);
          $status.find(".note").remove();
          $status.append($("<span>", { class: "note", text: "Busy: drop it again when this is done." }));
        } else {
          onFile(file);
        }
      });
    $zone.find("input[type=file]").on("change", function () {
      if (this.files[0]) onFile(this.files[0]);
      this.value = ""; // so choosing the same file again still fires "change"
    });
  }

  function intField(selector) {
    const text = String($(selector).val()).trim();
    return text === "" ? undefined : Number(text);
  }

  /* Lays images (data URLs, all of one size) out on one canvas, `cols` to a row with a white
   * gap, and returns it as a PNG data URL: one file to download for a grid or a strip. */
  async function composite(sources, cols) {
    const images = await Promise.all(sources.map(async (src) => {
      const img = new Image();
      img.src = src;
      await img.decode();
      return img;
    }));
    const w = images[0].naturalWidth, h = images[0].naturalHeight, gap = 4;
    const rows = Math.ceil(images.length / cols);
    const canvas = document.createElement("canvas");
    canvas.width = cols * w + (cols - 1) * gap;
    canvas.height = rows * h + (rows - 1) * gap;
    const context = canvas.getContext("2d");
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    images.forEach((img, i) => context.drawImage(img, (i % cols) * (w + gap), Math.floor(i / cols) * (h + gap)));
    return canvas.toDataURL("image/png");
  }

  // ---- Reconstruct ------------------------------------------------------------------

  async function reconstruct(file) {
    showError("recon", "");
    setBusy("recon", true); // a previous result stays up (dimmed) until this one replaces it
    try {
      const result = await call("POST", "/reconstruct", await photoForm({ image: file }));
      $("#recon-input").attr("src", png(result.input));
      $("#recon-result").attr("src", png(result.reconstruction));
      $("#recon-psnr").text(Number(result.psnr).toFixed(1));
      $("#recon-download").attr({ href: png(result.reconstruction),
                                  download: `${stem(file.name)}-reconstruction.png` });
      $("#recon-output").prop("hidden", false);
    } catch (error) {
      const kept = !$("#recon-output").prop("hidden");
      showFailure("recon", error, kept ? " The result below is still the previous photo's." : "");
    } finally {
      setBusy("recon", false);
    }
  }

  // ---- Sample -----------------------------------------------------------------------

  let shown = null; // the samples on screen: {seed, n}, redrawn when the temperature moves

  // No seed: the server picks one; the seed box is left as the user left it, so the next
  // Generate draws new cars, and the seed used is shown beside them to copy.
  async function sample(redraw) {
    const body = { temperature: Number($("#sample-temp").val()) };
    const n = redraw ? redraw.n : intField("#sample-n"), seed = redraw ? redraw.seed : intField("#sample-seed");
    if (n !== undefined) body.n = n;
    if (seed !== undefined) body.seed = seed;
    showError("sample", "");
    $("#sample-grid").empty();
    $("#sample-info").prop("hidden", true);
    shown = null;
    setBusy("sample", true);
    try {
      const result = await call("POST", "/sample", body);
      const sources = result.images.map(png);
      $("#sample-grid").append(sources.map((src, i) =>
        $("<img>", { class: "gen", src: src, alt: `Sampled car ${i + 1}` })));
      const temperature = Number(result.temperature).toFixed(1);
      $("#sample-seed-used").text(result.seed);
      $("#sample-temp-used").text(temperature);
      $("#sample-download").attr({ href: await composite(sources, Math.min(4, sources.length)),
                                   download: `cars-seed-${result.seed}-temperature-${temperature}.png` });
      $("#sample-info").prop("hidden", false);
      shown = { seed: result.seed, n: sources.length };
    } catch (error) {
      showFailure("sample", error);
    } finally {
      setBusy("sample", false);
    }
  }

  // ---- Morph ------------------------------------------------------------------------

  const morph = { files: { a: null, b: null }, problems: { a: "", b: "" }, frames: [], timer: null, direction: 1 };

  // A new car makes the morph on screen out of date; a file the service cannot read is
  // refused at once, in the panel, and its slot stays empty.
  function chooseMorphFile(slot, file) {
    togglePlay(false);
    $("#morph-output").prop("hidden", true);
    const label = PHOTO_LABELS[slot];
    morph.problems[slot] = isHeic(file) ? heicMessage(label)
      : ACCEPTED.test(file.type) || ACCEPTED.test(file.name) ? "" : `${label} is not a JPEG, PNG or WebP image.`;
    morph.files[slot] = morph.problems[slot] ? null : file;
    const $zone = $(`#morph-${slot}-drop`);
    const $preview = $zone.find(".preview");
    if ($preview.attr("src")) URL.revokeObjectURL($preview.attr("src"));
    if (morph.files[slot]) {
      $preview.attr("src", URL.createObjectURL(file)).prop("hidden", false);
      $zone.attr("title", file.name).find(".dropzone-text small").text(file.name);
    } else {
      $preview.removeAttr("src").prop("hidden", true);
      $zone.removeAttr("title").find(".dropzone-text small").text("choose or drop");
    }
    showError("morph", [morph.problems.a, morph.problems.b].filter(Boolean).join(" "));
    updateMorphButton();
  }

  function updateMorphButton() {
    const ready = morph.files.a && morph.files.b && !$("#morph").hasClass("busy") && API_OK;
    $("#morph-button").prop("disabled", !ready);
    // Say why Morph is off, until both cars are chosen.
    const missing = !morph.files.a && !morph.files.b ? "both cars" : !morph.files.a ? "the first car"
      : !morph.files.b ? "the second car" : "";
    $("#morph-hint").text(missing ? `Choose ${missing} to morph.` : "").prop("hidden", !missing);
  }

  // The slider counts frames from 1, like the text beside it: value 3 is "3 / 8".
  function showFrame(index) {
    const frame = index + 1, count = morph.frames.length;
    $("#morph-view").attr({ src: morph.frames[index], alt: `Morph frame ${frame} of ${count}` });
    $("#morph-slider").val(frame).attr("aria-valuetext", `frame ${frame} of ${count}`);
    $("#morph-frame").text(`${frame} / ${count}`);
    $("#morph-strip img").removeClass("current").eq(index).addClass("current");
  }

  // Play bounces between the two cars until stopped.
  function togglePlay(on) {
    clearInterval(morph.timer);
    morph.timer = null;
    if (on && morph.frames.length > 1) {
      morph.timer = setInterval(() => {
        let index = Number($("#morph-slider").val()) - 1 + morph.direction;
        if (index < 0 || index >= morph.frames.length) {
          morph.direction = -morph.direction;
          index += 2 * morph.direction;
        }
        showFrame(index);
      }, 180);
    }
    $("#morph-play").text(morph.timer ? "❚❚" : "▶").attr("aria-label", morph.timer ? "Pause" : "Play");
  }

  async function interpolate() {
    togglePlay(false);
    showError("morph", "");
    $("#morph-output").prop("hidden", true);
    setBusy("morph", true);
    try {
      const steps = intField("#morph-steps");
      const fields = { a: morph.files.a, b: morph.files.b };
      if (steps !== undefined) fields.steps = String(steps);
      const result = await call("POST", "/interpolate", await photoForm(fields));
      morph.frames = result.images.map(png);
      $("#morph-slider").attr("max", morph.frames.length);
      const strip = morph.frames.map((src, i) =>
        $("<img>", { class: "gen", src: src, alt: `Frame ${i + 1}`, "data-index": i }));
      $("#morph-strip").empty().append(strip)
        .css("--strip-cols", String(Math.max(4, Math.ceil(strip.length / 2)))); // two rows on wide screens
      $("#morph-download").attr({ href: await composite(morph.frames, morph.frames.length),
                                  download: `morph-${stem(fields.a.name)}-to-${stem(fields.b.name)}.png` });
      $("#morph-output").prop("hidden", false);
      showFrame(0);
    } catch (error) {
      showFailure("morph", error);
    } finally {
      setBusy("morph", false);
    }
  }

  // ---- Start ------------------------------------------------------------------------

  let connected = false; // /health has answered
  let healthRetry = null;

  async function loadHealth() {
    clearTimeout(healthRetry);
    try {
      const health = await call("GET", "/health");
      connected = true;
      showError("", "");
      const model = health.model, metrics = model.metrics || {};
      let info = `Model: ${model.image_size}×${model.image_size} px · ${model.latent_dim}-dimensional latent`;
      if (typeof metrics.psnr === "number") info += ` · validation PSNR ${metrics.psnr.toFixed(1)} dB`;
      // Which model this is: its S3 version when served from one, and when it was exported.
      const version = /\/versions\/([^/]+)/.exec(model.source || "");
      if (version) info += ` · version ${version[1]}`;
      if (model.exported_at) info += ` · exported ${String(model.exported_at).slice(0, 10)}`;
      $("#model-info").text(info);
      const l = health.limits || {};
      if (l.max_body_bytes) limits.maxBodyBytes = l.max_body_bytes;
      if (l.max_pixels) limits.maxPixels = l.max_pixels;
      if (l.max_samples) $("#sample-n").attr("max", l.max_samples);
      if (l.steps) $("#morph-steps").attr({ min: l.steps[0], max: l.steps[1] });
    } catch (error) {
      if (connected) return; // another request got through meanwhile
      $("#model-info").text("Model: unavailable");
      if (error instanceof ApiError && error.notApi) {
        showError("", `No Car VAE API answers at ${API}/health (HTTP ${error.status}). Check the address given ` +
                      "with ?api= or in config.js: it ends with the stage, e.g. https://…/dev.");
      } else {
        showFailure("", error);
        // Down, or a gateway or the model not ready yet: ask again until it answers.
        if (error instanceof ApiError && (error.unreachable || [502, 503, 504].includes(error.status))) {
          healthRetry = setTimeout(loadHealth, HEALTH_RETRY_MS);
        }
      }
    }
  }

  $(function () {
    // A file dropped outside a drop zone would otherwise replace the page.
    $(document).on("dragover drop", (e) => e.preventDefault());
    $(document).on("focusin pointerdown", (e) => { lastPanel = $(e.target).closest(".panel").attr("id") || null; });

    fileInput("#recon-drop", reconstruct);
    fileInput("#morph-a-drop", (file) => chooseMorphFile("a", file));
    fileInput("#morph-b-drop", (file) => chooseMorphFile("b", file));

    $("#sample-form").on("submit", (e) => { e.preventDefault(); sample(); });
    $("#sample-random").on("click", () => { $("#sample-seed").val(""); sample(); });
    $("#sample-temp").on("input", function () { $("#sample-temp-value").text(Number(this.value).toFixed(1)); });
    // Redraw the cars on screen (same seed) at the new temperature, once it settles: "change"
    // fires when the slider is let go, and the timer folds a run of arrow keys into one request.
    let redrawTimer = null;
    $("#sample-temp").on("change", () => {
      clearTimeout(redrawTimer);
      redrawTimer = setTimeout(() => {
        if (shown && !$("#sample").hasClass("busy")) sample(shown);
      }, 300);
    });

    $("#morph-form").on("submit", (e) => { e.preventDefault(); interpolate(); });
    $("#morph-slider").on("input", function () { togglePlay(false); showFrame(Number(this.value) - 1); });
    $("#morph-strip").on("click", "img", function () { togglePlay(false); showFrame(Number($(this).data("index"))); });
    $("#morph-play").on("click", () => togglePlay(!morph.timer));

    const problem = !API
      ? "This page does not know where the API is. Open it with ?api=https://…/dev added to the address, " +
        "or publish it together with its config.js."
      : !API_OK ? `The API address "${API}" must start with http:// or https://.` : "";
    if (problem) {
      showError("", problem);
      $(".panel").find("input, button").prop("disabled", true);
      $("#model-info").text("Model: not connected");
      return;
    }
    loadHealth();
  });
})(jQuery);
