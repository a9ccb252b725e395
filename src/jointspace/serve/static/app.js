// The jointspace search page: plain JavaScript, no framework, no build step.
// Everything it loads comes from the service that serves it. Every text that comes from the
// service is put in the page with textContent (never innerHTML).
"use strict";

(() => {
  const KEY_STORAGE = "jointspace.apiKey";
  const DEFAULT_K = 20;
  const MAX_K = 200;
  const TARGETS = ["unit", "image", "text"];
  // a phone shows fewer chips, so the results stay on the first screen
  const chipsShown = () => (window.matchMedia("(max-width: 640px)").matches ? 8 : 24);

  const $ = (id) => document.getElementById(id);
  const el = {
    form: $("search"), q: $("q"), target: $("target"), k: $("k"),
    collectionBox: $("collection-box"), collection: $("collection"),
    collectionInfo: $("collection-info"),
    file: $("image-file"), dropzone: $("dropzone"), dropLabel: $("drop-label"),
    queryImage: $("query-image"), queryImagePreview: $("query-image-preview"),
    queryImageName: $("query-image-name"), queryImageClear: $("query-image-clear"),
    like: $("like"), likeThumb: $("like-thumb"), likeCaption: $("like-caption"),
    likeClear: $("like-clear"),
    chips: $("chips"), chipList: $("chip-list"), chipsMore: $("chips-more"),
    error: $("error"), status: $("status"), results: $("results"), intro: $("intro"),
    detail: $("detail"), detailImg: $("detail-img"), detailTitle: $("detail-title"),
    detailMeta: $("detail-meta"), detailLabels: $("detail-labels"),
    detailFacts: $("detail-facts"), detailPayload: $("detail-payload"),
    detailLike: $("detail-like"), detailOpen: $("detail-open"), detailClose: $("detail-close"),
    keyDialog: $("key-dialog"), keyForm: $("key-form"), keyInput: $("key-input"),
    keyMessage: $("key-message"),
  };

  // What the page knows: the collections the service serves, the chosen labels, the query image
  // (a File, or an http(s) URL), the "more like this" item, and the search in flight.
  const state = {
    collections: [],
    labels: [], // [{label, count}] of the chosen collection
    chosen: new Set(),
    showAllChips: false,
    image: null, // {file: File, url: objectURL, name} or {href: "https://..."}
    like: null, // {id, caption}
    inflight: null,
    lastResults: [],
  };
  // Query images by history entry: a File cannot go into a URL, so back/forward finds it here.
  const imagesByEntry = new Map();
  let entrySeq = 0;

  // -- the API key ----------------------------------------------------------------------------

  const getKey = () => {
    try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
  };
  const setKey = (key) => {
    try { sessionStorage.setItem(KEY_STORAGE, key); } catch { /* private mode: memory only */ }
    memoryKey = key;
  };
  let memoryKey = getKey();
  const apiKey = () => getKey() || memoryKey;

  let keyPrompt = null; // one prompt at a time, shared by concurrent requests
  function askForKey(message) {
    if (keyPrompt) return keyPrompt;
    keyPrompt = new Promise((resolve) => {
      el.keyMessage.textContent = message;
      el.keyInput.value = "";
      const done = () => {
        el.keyDialog.removeEventListener("close", done);
        const key = el.keyDialog.returnValue === "ok" ? el.keyInput.value.trim() : "";
        if (key) setKey(key);
        keyPrompt = null;
        resolve(key);
      };
      el.keyDialog.returnValue = "";
      el.keyDialog.addEventListener("close", done);
      el.keyDialog.showModal();
      el.keyInput.focus();
    });
    return keyPrompt;
  }

  // A URL for an <img>: relative to the page, with api_key= when the service wants a key.
  function imageURL(path, extra) {
    const url = new URL(path, document.baseURI);
    if (extra) for (const [name, value] of Object.entries(extra)) url.searchParams.set(name, value);
    const key = apiKey();
    if (key && url.origin === location.origin) url.searchParams.set("api_key", key);
    return url.href;
  }

  // -- talking to the service -----------------------------------------------------------------

  class ServiceError extends Error {
    constructor(message, status, kind) {
      super(message);
      this.status = status;
      this.kind = kind;
    }
  }

  // fetch() a service path (relative to the page, so a prefix behind a proxy works); JSON back.
  // Asks for the API key on 401 (and again on 403), then retries.
  async function api(path, options = {}, attempt = 0) {
    const headers = new Headers(options.headers || {});
    headers.set("Accept", "application/json");
    const key = apiKey();
    if (key) headers.set("X-API-Key", key);
    let response;
    try {
      response = await fetch(new URL(path, document.baseURI), { ...options, headers });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ServiceError(`Could not reach the service (${err.message}).`, 0, "network");
    }
    let body = null;
    const text = await response.text();
    try { body = text ? JSON.parse(text) : null; } catch { body = null; }
    if (response.ok) return body;

    const error = body && typeof body === "object" ? body.error || {} : {};
    let message = typeof error.message === "string" && error.message
      ? error.message
      : (body && typeof body.detail === "string" ? body.detail : "");
    if (!message) message = `The service answered ${response.status} ${response.statusText}.`.replace(" .", ".");
    if ((response.status === 401 || response.status === 403) && attempt < 3) {
      const ask = response.status === 401
        ? "This service needs an API key. Enter it once; it is kept for this tab."
        : "That API key was refused. Enter the right one.";
      const entered = await askForKey(ask);
      if (entered) return api(path, options, attempt + 1);
      throw new ServiceError(`${message} Reload the page to enter a key.`, response.status,
        error.kind || "auth");
    }
    throw new ServiceError(message, response.status, error.kind || "");
  }

  // -- messages -------------------------------------------------------------------------------

  function showError(err) {
    if (!err) {
      el.error.hidden = true;
      el.error.textContent = "";
      return;
    }
    el.error.textContent = "";
    const title = document.createElement("strong");
    title.textContent = err.status ? `Error ${err.status}${err.kind ? ` (${err.kind})` : ""}: ` : "Error: ";
    el.error.append(title, document.createTextNode(err.message || String(err)));
    el.error.hidden = false;
  }
  const setStatus = (text) => { el.status.textContent = text; };

  // -- collections and labels -----------------------------------------------------------------

  function currentCollection() {
    return el.collection.value || (state.collections[0] && state.collections[0].name) || "";
  }

  async function loadCollections(wanted) {
    const body = await api("collections");
    state.collections = Array.isArray(body && body.collections) ? body.collections : [];
    el.collection.textContent = "";
    for (const c of state.collections) {
      const option = document.createElement("option");
      option.value = c.name;
      const points = typeof c.points === "number" ? ` (${c.points.toLocaleString()})` : "";
      const note = c.state && c.state !== "ready" ? ` [${c.state}]` : "";
      option.textContent = `${c.name}${points}${note}`;
      el.collection.append(option);
    }
    if (wanted && !state.collections.some((c) => c.name === wanted || (c.aliases || []).includes(wanted))) {
      const option = document.createElement("option");
      option.value = wanted;
      option.textContent = wanted;
      el.collection.append(option);
    }
    if (wanted) {
      const byAlias = state.collections.find((c) => (c.aliases || []).includes(wanted));
      el.collection.value = byAlias && !state.collections.some((c) => c.name === wanted) ? byAlias.name : wanted;
    }
    el.collectionBox.hidden = el.collection.options.length < 2;
    if (!state.collections.length) {
      setStatus("This service serves no collection yet. Ingest one, then reload.");
    }
  }

  async function loadLabels() {
    const name = currentCollection();
    state.labels = [];
    el.collectionInfo.textContent = "";
    if (!name) return renderChips();
    try {
      const info = await api(`collections/${encodeURIComponent(name)}`);
      state.labels = Array.isArray(info && info.labels) ? info.labels : [];
      // the picker names the collection when there are several
      const parts = el.collectionBox.hidden ? [name] : [];
      if (typeof info.points === "number") parts.push(`${info.points.toLocaleString()} items`);
      if (info.state && info.state !== "ready") parts.push(info.state);
      el.collectionInfo.textContent = parts.join(" · ");
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(err);
    }
    renderChips();
  }

  function renderChips() {
    const list = state.labels
      .filter((l) => l && typeof l.label === "string")
      .slice()
      .sort((a, b) => (b.count || 0) - (a.count || 0) || a.label.localeCompare(b.label));
    // chosen labels the collection does not list (e.g. from a link) still show, pressed
    for (const label of state.chosen) {
      if (!list.some((l) => l.label === label)) list.unshift({ label, count: null });
    }
    const limit = chipsShown();
    const shown = state.showAllChips ? list : list.filter((l, i) => i < limit || state.chosen.has(l.label));
    el.chipList.textContent = "";
    for (const { label, count } of shown) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.dataset.label = label;
      chip.setAttribute("aria-pressed", String(state.chosen.has(label)));
      const name = document.createElement("span");
      name.textContent = label;
      chip.append(name);
      if (typeof count === "number") {
        const n = document.createElement("span");
        n.className = "count";
        n.textContent = count.toLocaleString();
        chip.append(n);
      }
      el.chipList.append(chip);
    }
    el.chips.hidden = list.length === 0;
    const hiddenCount = list.length - shown.length;
    el.chipsMore.hidden = list.length <= limit;
    el.chipsMore.textContent = state.showAllChips ? "Fewer labels" : `All ${list.length} labels (${hiddenCount} more)`;
  }

  // -- the query image ------------------------------------------------------------------------

  function setImage(image) {
    if (state.image && state.image.url && (!image || image.url !== state.image.url)) {
      // keep object URLs alive while a history entry still refers to them
      if (![...imagesByEntry.values()].includes(state.image)) URL.revokeObjectURL(state.image.url);
    }
    state.image = image;
    if (!image) {
      el.queryImage.hidden = true;
      el.dropLabel.hidden = false;
      el.queryImagePreview.removeAttribute("src");
      el.file.value = "";
      return;
    }
    // an image given by URL is fetched by the service, not previewed: the page loads nothing
    // from elsewhere
    if (image.url) {
      el.queryImagePreview.src = image.url;
      el.queryImagePreview.alt = "Query image";
      el.queryImagePreview.hidden = false;
    } else {
      el.queryImagePreview.removeAttribute("src");
      el.queryImagePreview.hidden = true;
    }
    el.queryImageName.textContent = image.name || image.href || "image";
    el.queryImage.hidden = false;
    el.dropLabel.hidden = true;
  }

  function imageFromFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError(new ServiceError(`“${file.name}” is not an image (${file.type}).`, 0, ""));
      return;
    }
    showError(null);
    setLike(null);
    setImage({ file, url: URL.createObjectURL(file), name: file.name || "pasted image" });
  }

  // An image dragged from a page: a result of this service is fetched as a file; an http(s)
  // URL from elsewhere is sent as a URL for the service to fetch.
  async function imageFromURL(href) {
    let url;
    try { url = new URL(href, document.baseURI); } catch { return false; }
    if (url.protocol !== "http:" && url.protocol !== "https:") return false;
    if (url.origin === location.origin) {
      const headers = new Headers();
      if (apiKey()) headers.set("X-API-Key", apiKey());
      const response = await fetch(url, { headers });
      if (!response.ok) return false;
      const blob = await response.blob();
      if (!blob.type.startsWith("image/")) return false;
      imageFromFile(new File([blob], url.pathname.split("/").slice(-2, -1)[0] || "image", { type: blob.type }));
      return true;
    }
    showError(null);
    setLike(null);
    setImage({ href: url.href, name: url.href });
    return true;
  }

  function setLike(like) {
    state.like = like;
    if (!like) {
      el.like.hidden = true;
      el.likeThumb.removeAttribute("src");
      return;
    }
    el.likeThumb.src = imageURL(`items/${encodeURIComponent(like.collection || currentCollection())}/${encodeURIComponent(like.id)}/image`);
    el.likeThumb.alt = "";
    el.likeThumb.onerror = () => { el.likeThumb.removeAttribute("src"); el.likeThumb.hidden = true; };
    el.likeThumb.hidden = false;
    el.likeCaption.textContent = like.caption || like.id;
    el.like.hidden = false;
  }

  // -- the search state and the URL -----------------------------------------------------------

  function readForm() {
    let k = parseInt(el.k.value, 10);
    if (!Number.isFinite(k) || k < 1) k = DEFAULT_K;
    k = Math.min(k, MAX_K);
    return {
      q: el.q.value.trim(),
      target: TARGETS.includes(el.target.value) ? el.target.value : "unit",
      k,
      collection: currentCollection(),
      labels: [...state.chosen],
      id: state.like ? state.like.id : "",
      likeCaption: state.like ? state.like.caption || "" : "",
      image: state.image,
    };
  }

  function fromURL(search) {
    const p = new URLSearchParams(search);
    let k = parseInt(p.get("k") || "", 10);
    if (!Number.isFinite(k) || k < 1) k = DEFAULT_K;
    const target = p.get("target");
    const image = p.get("image");
    return {
      q: p.get("q") || "",
      target: TARGETS.includes(target) ? target : "unit",
      k: Math.min(k, MAX_K),
      collection: p.get("collection") || "",
      labels: p.getAll("labels").filter(Boolean),
      id: p.get("id") || "",
      likeCaption: "",
      image: image && /^https?:\/\//i.test(image) ? { href: image, name: image } : null,
    };
  }

  function toURL(s) {
    const p = new URLSearchParams();
    if (s.q) p.set("q", s.q);
    if (s.id) p.set("id", s.id);
    if (s.image && s.image.href) p.set("image", s.image.href);
    p.set("target", s.target);
    p.set("k", String(s.k));
    if (s.collection) p.set("collection", s.collection);
    for (const label of s.labels) p.append("labels", label);
    return `${location.pathname}?${p.toString()}`;
  }

  function applyToForm(s) {
    el.q.value = s.q;
    el.target.value = s.target;
    el.k.value = String(s.k);
    if (s.collection && [...el.collection.options].some((o) => o.value === s.collection)) {
      el.collection.value = s.collection;
    }
    state.chosen = new Set(s.labels);
    setImage(s.image || null);
    setLike(s.id ? { id: s.id, caption: s.likeCaption, collection: s.collection } : null);
  }

  const isEmpty = (s) => !s.q && !s.id && !s.image;

  // -- searching ------------------------------------------------------------------------------

  function searchBody(s) {
    const where = s.labels.length === 0 ? null
      : { labels: s.labels.length === 1 ? s.labels[0] : s.labels };
    if (s.image && s.image.file) {
      const form = new FormData();
      form.set("collection", s.collection);
      if (s.q) form.set("text", s.q);
      form.set("target", s.target);
      form.set("k", String(s.k));
      if (where) form.set("where", JSON.stringify(where));
      form.set("image", s.image.file, s.image.file.name || "image");
      return { method: "POST", body: form };
    }
    const body = { collection: s.collection, target: s.target, k: s.k };
    if (s.id) body.id = s.id;
    else {
      if (s.q) body.text = s.q;
      if (s.image && s.image.href) body.image = s.image.href;
    }
    if (where) body.where = where;
    return {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
  }

  // Run a search. how: "push" (a new history entry), "replace" (the page opened with it), or
  // "none" (back/forward brought it back).
  async function runSearch(s, how) {
    if (isEmpty(s)) {
      setStatus("Type some words, add an image, or both.");
      el.q.focus();
      return;
    }
    if (!s.collection) {
      showError(new ServiceError("No collection to search: this service serves none.", 0, ""));
      return;
    }
    if (how !== "none") {
      const entry = ++entrySeq;
      if (s.image && s.image.file) imagesByEntry.set(entry, s.image);
      const historyState = { ...s, image: null, entry };
      if (how === "push") history.pushState(historyState, "", toURL(s));
      else history.replaceState(historyState, "", toURL(s));
    }
    document.title = `${describe(s)} · jointspace search`;
    if (state.inflight) state.inflight.abort();
    const controller = new AbortController();
    state.inflight = controller;
    showError(null);
    el.intro.hidden = true;
    el.results.setAttribute("aria-busy", "true");
    el.results.classList.add("loading");
    setStatus(`Searching ${describe(s)}…`);
    try {
      const response = await api("search", { ...searchBody(s), signal: controller.signal });
      if (controller !== state.inflight) return;
      renderResults(response || {}, s);
    } catch (err) {
      if (err.name === "AbortError") return;
      el.results.textContent = "";
      state.lastResults = [];
      setStatus("");
      showError(err);
    } finally {
      if (controller === state.inflight) {
        state.inflight = null;
        el.results.removeAttribute("aria-busy");
        el.results.classList.remove("loading");
      }
    }
  }

  function describe(s) {
    const parts = [];
    if (s.id) parts.push(`like “${s.likeCaption || s.id}”`);
    if (s.q) parts.push(`“${s.q}”`);
    if (s.image) parts.push(s.q ? "+ image" : "an image");
    return parts.join(" ");
  }

  function captionOf(r) {
    if (typeof r.text === "string" && r.text.trim()) return r.text.trim();
    const ref = r.source || r.image || r.id;
    return typeof ref === "string" ? ref.split(/[\\/]/).pop() || ref : String(r.id);
  }

  function renderResults(response, s) {
    const results = Array.isArray(response.results) ? response.results : [];
    state.lastResults = results;
    el.results.textContent = "";
    results.forEach((r, index) => el.results.append(resultCard(r, index)));
    const took = typeof response.took_ms === "number" ? ` in ${Math.round(response.took_ms)} ms` : "";
    const where = s.labels.length ? ` · labels: ${s.labels.join(" or ")}` : "";
    const count = results.length === 1 ? "1 result" : `${results.length} results`;
    setStatus(results.length
      ? `${count} for ${describe(s)} (${s.target}s)${where}${took}`
      : `Nothing found for ${describe(s)} (${s.target}s)${where}.`);
  }

  function resultCard(r, index) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.id = String(r.id);

    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.dataset.index = String(index);
    const caption = captionOf(r);
    const frame = document.createElement("span");
    frame.className = "thumb";
    if (r.thumbnail) {
      const img = document.createElement("img");
      img.src = imageURL(r.thumbnail);
      img.alt = caption;
      img.decoding = "async";
      if (index >= 12) img.loading = "lazy";
      img.addEventListener("error", () => {
        img.remove();
        frame.classList.add("none");
        frame.textContent = "no image";
      }, { once: true });
      frame.append(img);
    } else {
      frame.classList.add("none");
      frame.textContent = "text only";
    }
    const cap = document.createElement("span");
    cap.className = "caption";
    cap.textContent = caption;
    open.append(frame, cap);
    open.setAttribute("aria-label", `${caption}, score ${formatScore(r.score)}. Show details`);

    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.title = "cosine similarity";
    score.textContent = formatScore(r.score);
    meta.append(score);
    if (Array.isArray(r.labels) && r.labels.length) {
      const labels = document.createElement("ul");
      labels.className = "labels";
      labels.setAttribute("aria-label", "Labels");
      for (const label of r.labels) {
        const item = document.createElement("li");
        item.textContent = String(label);
        labels.append(item);
      }
      meta.append(labels);
    }

    const like = document.createElement("button");
    like.type = "button";
    like.className = "like-btn";
    like.dataset.index = String(index);
    like.textContent = "More like this";
    like.setAttribute("aria-label", `More like ${caption}`);

    li.append(open, meta, like);
    return li;
  }

  const formatScore = (score) => (typeof score === "number" ? score.toFixed(3) : "–");

  function moreLikeThis(r) {
    if (el.detail.open) el.detail.close();
    setImage(null);
    el.q.value = "";
    setLike({ id: String(r.id), caption: captionOf(r), collection: currentCollection() });
    runSearch(readForm(), "push").then(() => focusFirstResult());
  }

  function focusFirstResult() {
    const first = el.results.querySelector("button.open");
    if (first) first.focus();
  }

  // -- the detail dialog ----------------------------------------------------------------------

  let detailResult = null;
  let detailOpener = null;

  function showDetail(r, opener) {
    detailResult = r;
    detailOpener = opener || null;
    const caption = captionOf(r);
    el.detailTitle.textContent = caption;
    el.detailMeta.textContent = `score ${formatScore(r.score)}`;
    el.detailLabels.textContent = "";
    for (const label of Array.isArray(r.labels) ? r.labels : []) {
      const li = document.createElement("li");
      li.textContent = String(label);
      el.detailLabels.append(li);
    }
    el.detailFacts.textContent = "";
    const fact = (name, value) => {
      if (value === null || value === undefined || value === "") return;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      el.detailFacts.append(dt, dd);
    };
    fact("id", r.id);
    fact("source", r.source);
    fact("image", r.image);
    let payload;
    try { payload = JSON.stringify(r.payload ?? {}, null, 2); } catch { payload = String(r.payload); }
    el.detailPayload.textContent = payload;
    if (r.thumbnail) {
      const full = imageURL(r.thumbnail, { size: "full" });
      el.detailImg.src = full;
      el.detailImg.alt = caption;
      el.detailImg.hidden = false;
      el.detailOpen.href = full;
      el.detailOpen.hidden = false;
    } else {
      el.detailImg.removeAttribute("src");
      el.detailImg.hidden = true;
      el.detailOpen.hidden = true;
    }
    el.detail.showModal();
    el.detailClose.focus();
  }

  el.detailImg.addEventListener("error", () => { el.detailImg.hidden = true; });
  el.detailClose.addEventListener("click", () => el.detail.close());
  el.detailLike.addEventListener("click", () => { if (detailResult) moreLikeThis(detailResult); });
  el.detail.addEventListener("close", () => {
    el.detailImg.removeAttribute("src");
    if (detailOpener && document.contains(detailOpener)) detailOpener.focus();
    detailOpener = null;
  });
  // a click on the backdrop (outside the box) closes it too
  el.detail.addEventListener("click", (event) => {
    if (event.target === el.detail) el.detail.close();
  });

  // -- events ---------------------------------------------------------------------------------

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    // a text or image search replaces "more like this"
    const s = readForm();
    if (s.id && (s.q || s.image)) {
      setLike(null);
      s.id = "";
      s.likeCaption = "";
    }
    runSearch(s, "push");
  });

  el.results.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button || !el.results.contains(button)) return;
    const r = state.lastResults[Number(button.dataset.index)];
    if (!r) return;
    if (button.classList.contains("like-btn")) moreLikeThis(r);
    else if (button.classList.contains("open")) showDetail(r, button);
  });

  el.chipList.addEventListener("click", (event) => {
    const chip = event.target.closest("button.chip");
    if (!chip) return;
    const label = chip.dataset.label;
    if (state.chosen.has(label)) state.chosen.delete(label);
    else state.chosen.add(label);
    chip.setAttribute("aria-pressed", String(state.chosen.has(label)));
    const s = readForm();
    if (!isEmpty(s)) runSearch(s, "push");
  });
  el.chipsMore.addEventListener("click", () => {
    state.showAllChips = !state.showAllChips;
    renderChips();
  });

  el.collection.addEventListener("change", async () => {
    state.chosen.clear();
    setLike(null);
    await loadLabels();
    const s = readForm();
    if (!isEmpty(s)) runSearch(s, "push");
  });

  el.target.addEventListener("change", () => {
    const s = readForm();
    if (!isEmpty(s)) runSearch(s, "push");
  });

  el.file.addEventListener("change", () => {
    if (el.file.files && el.file.files[0]) imageFromFile(el.file.files[0]);
  });
  el.queryImageClear.addEventListener("click", () => {
    setImage(null);
    el.file.focus();
  });
  el.likeClear.addEventListener("click", () => {
    setLike(null);
    el.q.focus();
  });

  // drag and drop: anywhere on the page (the zone lights up), never navigating away
  let dragDepth = 0;
  const hasDragData = (event) => {
    const types = event.dataTransfer ? [...event.dataTransfer.types] : [];
    return types.includes("Files") || types.includes("text/uri-list");
  };
  document.addEventListener("dragenter", (event) => {
    if (!hasDragData(event)) return;
    event.preventDefault();
    dragDepth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasDragData(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", async (event) => {
    dragDepth = 0;
    document.body.classList.remove("dragging");
    if (!event.dataTransfer) return;
    event.preventDefault();
    const file = [...(event.dataTransfer.files || [])].find((f) => !f.type || f.type.startsWith("image/"));
    let added = false;
    if (file) {
      imageFromFile(file);
      added = true;
    } else {
      const uri = (event.dataTransfer.getData("text/uri-list") || "").split(/\r?\n/).find((l) => l && !l.startsWith("#"));
      if (uri) {
        try { added = await imageFromURL(uri); } catch { added = false; }
      }
      if (!added) showError(new ServiceError("Drop an image file (or an image from a web page).", 0, ""));
    }
    if (added) el.q.focus();
  });

  // paste an image from the clipboard (anywhere; text pastes into the box as usual)
  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? [...event.clipboardData.items] : [];
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return;
    event.preventDefault();
    const blob = item.getAsFile();
    if (!blob) return;
    const ext = (blob.type.split("/")[1] || "png").replace("jpeg", "jpg");
    imageFromFile(blob.name ? blob : new File([blob], `pasted.${ext}`, { type: blob.type }));
  });

  // "/" focuses the search box (unless typing somewhere already)
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const t = event.target;
    const typing = t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
    if (typing || el.detail.open || el.keyDialog.open) return;
    event.preventDefault();
    el.q.focus();
    el.q.select();
  });

  window.addEventListener("popstate", (event) => {
    const s = event.state && typeof event.state === "object" && "target" in event.state
      ? { ...event.state, image: imagesByEntry.get(event.state.entry) || fromURL(location.search).image }
      : fromURL(location.search);
    if (el.detail.open) el.detail.close();
    const collectionChanged = s.collection && s.collection !== currentCollection();
    applyToForm(s);
    const go = () => {
      renderChips();
      if (isEmpty(s)) {
        el.results.textContent = "";
        state.lastResults = [];
        setStatus("");
        showError(null);
        el.intro.hidden = false;
        document.title = "jointspace search";
      } else {
        runSearch(readForm(), "none");
      }
    };
    if (collectionChanged) loadLabels().then(go);
    else go();
  });

  // -- start ----------------------------------------------------------------------------------

  async function start() {
    const s = fromURL(location.search);
    try {
      await loadCollections(s.collection);
    } catch (err) {
      showError(err);
      return;
    }
    s.collection = currentCollection();
    applyToForm(s);
    await loadLabels();
    if (!isEmpty(s)) {
      await runSearch(readForm(), "replace");
    } else {
      history.replaceState({ ...readForm(), image: null, entry: 0 }, "", location.href);
      if (!matchMedia("(pointer: coarse)").matches) el.q.focus();
    }
  }

  start();
})();
