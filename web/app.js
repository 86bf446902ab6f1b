/* Car VAE page: three panels over the JSON API (see handler.py for the routes).
 * Plain jQuery, no build step. Images come back as base64 PNG strings. */
(function ($) {
  "use strict";

  // ?api=URL wins over config.js (written by the local server or the S3 publisher).
  const API = (new URLSearchParams(location.search).get("api") ||
               (window.CAR_VAE_CONFIG || {}).apiBaseUrl || "").trim().replace(/\/+$/, "");
  // Without a usable address the page sends nothing: no picker, drop or button calls out.
  const API_OK = /^https?:\/\/./i.test(API);

  // Refined from GET /health: Lambda takes 6 MB of event, in which the upload is base64 (4/3 larger).
  const limits = { maxBodyBytes: Math.floor((6 * 1024 - 64) * 1024 * 3 / 4) };

  // Photos straight off a phone are several MB while the model looks at ~128 px: files
  // over SHRINK_ABOVE are scaled down in the browser before upload (faster, and under
  // the body limit, which on AWS counts the upload base64-encoded, i.e. 4/3 larger).
  const SHRINK_ABOVE = 2 * 1024 * 1024;
  const SHRINK_TO = 1024;

  // notApi: the address answered, but not as this API would (a 404, a page): a wrong ?api= or config.js.
  class ApiError extends Error {
    constructor(message, status, notApi) {
      super(message);
      this.status = status;
      this.notApi = Boolean(notApi);
    }
  }

  // Formats browsers show but the service cannot read, by MIME type or file name.
  const UNSUPPORTED = /^image\/(heic|heif)$|\.(heic|heif)$/i;
  const PHOTO_LABELS = { image: "The photo", a: "The first car's photo", b: "The second car's photo" };

  const png = (b64) => "data:image/png;base64," + b64;
  const mb = (bytes) => (bytes / (1024 * 1024)).toFixed(1) + " MB";

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
            if (!connected && path !== "/health") loadHealth(); // the service is back: clear the banner
            resolve(body);
          } else {
            reject(new ApiError(`The server sent an unexpected reply (HTTP ${xhr.status}). Please try again later.`,
                                xhr.status, true));
          }
        })
        .fail((xhr, status) => {
          const body = parseJson(xhr.responseText);
          const ours = Boolean(body && body.error && body.error.message);
          // 404, or API Gateway's 403 for a path it has no route for: most likely not this API's address.
          const elsewhere = (xhr.status === 404 || xhr.status === 403) && !ours;
          reject(new ApiError(failureMessage(xhr, status, body), xhr.status, elsewhere));
        });
    });
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
      return sentence(body.error.message) + id;
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

  function showError(panel, message) {
    $(panel ? `#${panel}-error` : "#error").text(message || "").prop("hidden", !message);
  }

  // While a panel's request runs: controls disabled, spinner shown. Disabling the focused
  // control drops keyboard focus to the page, so it is given back afterwards.
  function setBusy(panel, on) {
    const $panel = $("#" + panel);
    if (on) $panel.data("focus", document.activeElement);
    $panel.toggleClass("busy", on).attr("aria-busy", String(on));
    $panel.find("input, button").prop("disabled", on || !API_OK);
    $(`#${panel}-status`).prop("hidden", !on);
    if (!on) {
      updateMorphButton();
      const focused = $panel.data("focus");
      if (focused && $.contains($panel[0], focused) && document.activeElement === document.body) focused.focus();
    }
  }

  /* Scales a big photo down (on white, like the server does with transparency) and
   * returns a JPEG blob; anything the browser cannot decode is sent as-is so that the
   * server can say what is wrong with it. */
  async function shrink(file) {
    if (file.size <= SHRINK_ABOVE || !window.createImageBitmap) return file;
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

  async function photoForm(fields) {
    const form = new FormData();
    let total = 0;
    for (const [name, value] of Object.entries(fields)) {
      if (value instanceof Blob && (UNSUPPORTED.test(value.type) || UNSUPPORTED.test(value.name || ""))) {
        throw new ApiError(`${PHOTO_LABELS[name] || "The photo"} is HEIC, which the service cannot read. ` +
                           "Please send a JPEG, PNG or WebP (an iPhone saves JPEGs with Settings › Camera › " +
                           "Formats › Most Compatible).");
      }
    }
    for (const [name, value] of Object.entries(fields)) {
      if (value instanceof Blob) {
        const blob = await shrink(value);
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
        if (file && API_OK && !$zone.closest(".panel").hasClass("busy")) onFile(file);
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

  // ---- Reconstruct ------------------------------------------------------------------

  async function reconstruct(file) {
    showError("recon", "");
    $("#recon-output").prop("hidden", true);
    setBusy("recon", true);
    try {
      const result = await call("POST", "/reconstruct", await photoForm({ image: file }));
      $("#recon-input").attr("src", png(result.input));
      $("#recon-result").attr("src", png(result.reconstruction));
      $("#recon-psnr").text(Number(result.psnr).toFixed(1));
      $("#recon-output").prop("hidden", false);
    } catch (error) {
      showError("recon", messageOf(error));
    } finally {
      setBusy("recon", false);
    }
  }

  // ---- Sample -----------------------------------------------------------------------

  async function sample() {
    const body = { temperature: Number($("#sample-temp").val()) };
    const n = intField("#sample-n"), seed = intField("#sample-seed");
    if (n !== undefined) body.n = n;
    if (seed !== undefined) body.seed = seed; // no seed: the server picks one and returns it
    showError("sample", "");
    $("#sample-grid").empty();
    setBusy("sample", true);
    try {
      const result = await call("POST", "/sample", body);
      $("#sample-seed").val(result.seed);
      $("#sample-grid").append(result.images.map((b64, i) =>
        $("<img>", { class: "gen", src: png(b64), alt: `Sampled car ${i + 1}` })));
    } catch (error) {
      showError("sample", messageOf(error));
    } finally {
      setBusy("sample", false);
    }
  }

  // ---- Morph ------------------------------------------------------------------------

  const morph = { files: { a: null, b: null }, frames: [], timer: null, direction: 1 };

  function chooseMorphFile(slot, file) {
    morph.files[slot] = file;
    const $zone = $(`#morph-${slot}-drop`);
    const $preview = $zone.find(".preview");
    if ($preview.attr("src")) URL.revokeObjectURL($preview.attr("src"));
    $preview.attr("src", URL.createObjectURL(file)).prop("hidden", false);
    $zone.find(".dropzone-text small").text(file.name);
    updateMorphButton();
  }

  function updateMorphButton() {
    const ready = morph.files.a && morph.files.b && !$("#morph").hasClass("busy") && API_OK;
    $("#morph-button").prop("disabled", !ready);
  }

  function showFrame(index) {
    $("#morph-view").attr("src", morph.frames[index]);
    $("#morph-slider").val(index);
    $("#morph-frame").text(`${index + 1} / ${morph.frames.length}`);
    $("#morph-strip img").removeClass("current").eq(index).addClass("current");
  }

  // Play bounces between the two cars until stopped.
  function togglePlay(on) {
    clearInterval(morph.timer);
    morph.timer = null;
    if (on && morph.frames.length > 1) {
      morph.timer = setInterval(() => {
        let index = Number($("#morph-slider").val()) + morph.direction;
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
      $("#morph-slider").attr("max", morph.frames.length - 1);
      const strip = morph.frames.map((src, i) =>
        $("<img>", { class: "gen", src: src, alt: `Frame ${i + 1}`, "data-index": i }));
      $("#morph-strip").empty().append(strip)
        .css("--strip-cols", String(Math.max(4, Math.ceil(strip.length / 2)))); // two rows on wide screens
      $("#morph-output").prop("hidden", false);
      showFrame(0);
    } catch (error) {
      showError("morph", messageOf(error));
    } finally {
      setBusy("morph", false);
    }
  }

  // ---- Start ------------------------------------------------------------------------

  let connected = false; // /health has answered

  async function loadHealth() {
    try {
      const health = await call("GET", "/health");
      connected = true;
      showError("", "");
      const model = health.model, metrics = model.metrics || {};
      let info = `Model: ${model.image_size}×${model.image_size} px · ${model.latent_dim}-dimensional latent`;
      if (typeof metrics.psnr === "number") info += ` · validation PSNR ${metrics.psnr.toFixed(1)} dB`;
      $("#model-info").text(info);
      const l = health.limits || {};
      if (l.max_body_bytes) limits.maxBodyBytes = l.max_body_bytes;
      if (l.max_samples) $("#sample-n").attr("max", l.max_samples);
      if (l.steps) $("#morph-steps").attr({ min: l.steps[0], max: l.steps[1] });
    } catch (error) {
      $("#model-info").text("Model: unavailable");
      showError("", error instanceof ApiError && error.notApi
        ? `No Car VAE API answers at ${API}/health (HTTP ${error.status}). Check the address given with ?api= ` +
          "or in config.js: it ends with the stage, e.g. https://…/dev."
        : messageOf(error));
    }
  }

  $(function () {
    // A file dropped outside a drop zone would otherwise replace the page.
    $(document).on("dragover drop", (e) => e.preventDefault());

    fileInput("#recon-drop", reconstruct);
    fileInput("#morph-a-drop", (file) => chooseMorphFile("a", file));
    fileInput("#morph-b-drop", (file) => chooseMorphFile("b", file));

    $("#sample-form").on("submit", (e) => { e.preventDefault(); sample(); });
    $("#sample-random").on("click", () => { $("#sample-seed").val(""); sample(); });
    $("#sample-temp").on("input", function () { $("#sample-temp-value").text(Number(this.value).toFixed(1)); });

    $("#morph-form").on("submit", (e) => { e.preventDefault(); interpolate(); });
    $("#morph-slider").on("input", function () { togglePlay(false); showFrame(Number(this.value)); });
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
