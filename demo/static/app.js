// pgsse demo page: one EventSource for every video on the page.
"use strict";

const rows = new Map();   // video id → <li>
let lastId = -1;          // highest event id applied; EventSource resumes after it
let source = null;
const FEED_MAX = 60;

const $ = (sel) => document.querySelector(sel);
const template = $("#video-row");

function setConnection(state) {
  $("#conn").dataset.state = state;
  $("#conn-text").textContent = state;
}

function row(id, createdAt) {
  let li = rows.get(id);
  if (li) return li;
  li = template.content.firstElementChild.cloneNode(true);
  li.dataset.video = id;
  li.dataset.events = "0";
  li.querySelector(".id").textContent = id;
  const when = li.querySelector(".when");
  const t = createdAt ? new Date(createdAt) : new Date();
  when.dateTime = t.toISOString();
  when.textContent = "uploaded " + t.toLocaleTimeString();
  li.querySelector(".bar").setAttribute("aria-label", "Progress of " + id);
  rows.set(id, li);
  $("#videos").prepend(li);
  $("#count").textContent = String(rows.size);
  $("#empty").hidden = true;
  return li;
}

function setStatus(li, status) {
  li.dataset.status = status;
  const badge = li.querySelector(".badge");
  badge.dataset.status = status;
  badge.textContent = status;
  if (status === "processed") setProgress(li, 100, "done");
}

function setProgress(li, percent, stage) {
  const p = Math.max(0, Math.min(100, Math.round(percent)));
  li.dataset.percent = String(p);
  li.querySelector(".fill").style.width = p + "%";
  li.querySelector(".bar").setAttribute("aria-valuenow", String(p));
  li.querySelector(".pct").textContent = p + "%";
  if (stage) li.querySelector(".stage").textContent = stage;
}

function feed(ev, text) {
  const item = document.createElement("li");
  item.dataset.eventId = String(ev.id);
  item.innerHTML = '<span class="n"></span> <span class="k"></span> <span class="t"></span>';
  item.querySelector(".n").textContent = "#" + ev.id;
  item.querySelector(".k").textContent = ev.kind;
  item.querySelector(".t").textContent = text;
  const list = $("#feed");
  list.prepend(item);
  while (list.children.length > FEED_MAX) list.lastElementChild.remove();
}

// apply shows one event, once: events arrive in id order, so anything at or
// below the last applied id has been shown already.
function apply(ev) {
  if (ev.id <= lastId) return;
  lastId = ev.id;
  const d = ev.data;
  const li = row(d.video_id);
  li.dataset.events = String(Number(li.dataset.events) + 1);
  if (ev.kind === "video.status") {
    setStatus(li, d.status);
    feed(ev, d.video_id + " " + (d.previous_status ? d.previous_status + " → " : "") + d.status);
  } else if (ev.kind === "video.progress") {
    setProgress(li, d.percent, d.stage);
    feed(ev, d.video_id + " " + Math.round(d.percent) + "%" + (d.stage ? " " + d.stage : ""));
  }
}

async function start() {
  let state;
  try {
    const res = await fetch("demo/state", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    state = await res.json();
  } catch (err) {
    setConnection("reconnecting");
    setTimeout(start, 2000);
    return;
  }
  for (const v of state.videos) {
    const li = row(v.id, v.created_at);
    setStatus(li, v.status);
    if (v.percent !== null && v.status !== "processed") setProgress(li, v.percent, v.stage);
  }
  lastId = Math.max(lastId, state.position);

  // One stream for every video, resuming right after the state just read. On
  // reconnects EventSource sends Last-Event-ID itself, which pgsse prefers to
  // the query parameter.
  source = new EventSource("events?topic=videos/*&last_event_id=" + state.position);
  source.onopen = () => setConnection("live");
  source.onerror = () => setConnection(source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting");
  for (const kind of ["video.status", "video.progress"]) {
    source.addEventListener(kind, (e) => apply(JSON.parse(e.data)));
  }
  source.addEventListener("stream.reset", () => {
    // Our position is gone from the log: read the state afresh.
    source.close();
    lastId = -1;
    start();
  });
}

start();
