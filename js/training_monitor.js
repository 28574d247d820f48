// TITrainEmbedding and TITrainEmbeddingNative: a live loss chart (raw loss grey, smoothed blue, validation loss red),
// two status lines and the latest sample preview, fed by the node's "textual_inversion.progress" / ".preview" /
// ".done" PromptServer events. Everything sits in one panel of fixed height: previews are drawn in a fixed box
// (pixelated, so a 32 px picture shows as a picture, not a thin strip), never as a node image, which the front end
// adds under the widgets and which made the node grow over the one below. After a run the node's ui output
// carries the whole loss series and the last preview, so both come back after a reload or a tab switch.
import { addPanel, api, app, chainCallback, lastOutput, nodeFromEvent } from "./common/util.js";

const NODES = new Set(["TITrainEmbedding", "TITrainEmbeddingNative"]);
const LINE = "white-space:pre;overflow:hidden;text-overflow:ellipsis;";

function makePanel(node) {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:11px monospace;color:#ccc;";
  // two lines of fixed height (the full text is the tooltip), so that the panel never outgrows its node
  const lines = [document.createElement("div"), document.createElement("div")];
  lines.forEach((line) => (line.style.cssText = LINE));
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 120;
  canvas.style.cssText = "width:100%;height:120px;background:#1e1e1e;border-radius:4px;";
  const preview = document.createElement("img");
  preview.style.cssText = "display:block;width:128px;height:128px;margin:0 auto;object-fit:contain;" +
    "image-rendering:pixelated;background:#1e1e1e;border-radius:4px;visibility:hidden;";
  root.append(...lines, canvas, preview);
  addPanel(node, "training", root, 306);
  node.tiMonitor = { root, lines, canvas, preview, losses: [], smoothed: [], validation: [] };
  setStatus(node.tiMonitor, "not trained yet", "");
  // after a tab switch the graph is rebuilt: the live chart is gone, but the last run's outcome is kept
  setTimeout(() => showOutput(node, lastOutput(node)), 0);
}

// The last run as the node's ui output gave it: the outcome line and the whole loss chart.
function showOutput(node, output) {
  const monitor = node.tiMonitor;
  if (!monitor || !output) return;
  const outcome = output.outcome?.[0];
  if (outcome) showOutcome(monitor, outcome);
  showPreview(monitor, output.preview?.[0]);
  const series = output.losses?.[0];
  if (series) {
    const finite = (v) => (v === null ? NaN : v);
    monitor.losses = (series.loss ?? []).map(finite);
    monitor.smoothed = (series.smoothed ?? []).map(finite);
    monitor.validation = (series.validation ?? []).map(([step, v]) => [step, finite(v)]);
    drawChart(monitor);
  }
}

// `outcome` is TrainResult.report(): the words (label) come from the trainer, so they never drift apart
function showOutcome(monitor, outcome) {
  const rollbacks = outcome.nan_rollbacks ? `, ${outcome.nan_rollbacks} NaN rollback(s)` : "";
  setStatus(monitor, `${outcome.name}: ${outcome.label} at step ${outcome.step}${rollbacks}`,
    `saved ${outcome.path ?? "nothing"}`);
}

function showPreview(monitor, url) {
  if (url) monitor.preview.src = url;
  monitor.preview.style.visibility = url ? "visible" : "hidden";
}

function setStatus(monitor, first, second) {
  monitor.lines[0].textContent = first;
  monitor.lines[1].textContent = second ?? "";
  monitor.root.title = [first, second].filter(Boolean).join("\n");
}

function drawChart(monitor) {
  const { canvas, losses, smoothed, validation } = monitor;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const all = losses.concat(smoothed).filter(Number.isFinite);
  if (all.length < 2) return;
  const low = Math.min(...all);
  const span = Math.max(...all) - low || 1;
  const pad = 6;
  const line = (series, colour) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    series.forEach((value, i) => {
      const x = pad + ((canvas.width - 2 * pad) * i) / Math.max(series.length - 1, 1);
      const y = canvas.height - pad - ((canvas.height - 2 * pad) * (value - low)) / span;
      i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(losses, "#888");
  line(smoothed, "#4a8df0");
  // validation losses sit at their steps (step s is losses[s - 1]; step 0 is the start), on their own scale:
  // their late changes are far smaller than the training loss's step-to-step noise
  const values = validation.map((p) => p[1]).filter(Number.isFinite);
  if (!values.length) return;
  const vLow = Math.min(...values);
  const vSpan = Math.max(...values) - vLow || 1;
  const steps = Math.max(losses.length - 1, 1);
  ctx.strokeStyle = ctx.fillStyle = "#e0553a";
  ctx.beginPath();
  validation.forEach(([step, value], i) => {
    const x = pad + ((canvas.width - 2 * pad) * Math.max(step - 1, 0)) / steps;
    const y = canvas.height - pad - ((canvas.height - 2 * pad) * (value - vLow)) / vSpan;
    i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
    ctx.fillRect(x - 2, y - 2, 4, 4);
  });
  ctx.stroke();
}

function onProgress(event) {
  const d = event.detail;
  const node = nodeFromEvent(d);
  const monitor = node?.tiMonitor;
  if (!monitor) return;
  if (d.step <= monitor.losses.length) {
    // a new run (or a resume): start the chart again from this step
    monitor.losses.length = 0;
    monitor.smoothed.length = 0;
    monitor.validation.length = 0;
    showPreview(monitor, null); // the last run's picture goes with its chart
  }
  monitor.losses.push(d.loss);
  monitor.smoothed.push(d.smoothed_loss);
  if (Number.isFinite(d.val_loss)) monitor.validation.push([d.step, d.val_loss]);
  const last = monitor.validation.at(-1);
  const val = last ? `  validation ${last[1].toFixed(4)} (step ${last[0]})` : "";
  const eta = Number.isFinite(d.eta) ? `, ${Math.round(d.eta)} s left` : "";
  const num = (v, f) => (Number.isFinite(v) ? f(v) : "-");
  setStatus(monitor, `${d.name}: step ${d.step}/${d.steps}${eta}  lr ${num(d.lr, (v) => v.toExponential(2))}`,
    `loss ${num(d.loss, (v) => v.toFixed(4))}  smoothed ${num(d.smoothed_loss, (v) => v.toFixed(4))}${val}`);
  drawChart(monitor);
  node.setDirtyCanvas(true, false);
}

function onPreview(event) {
  const node = nodeFromEvent(event.detail);
  if (!node?.tiMonitor) return;
  showPreview(node.tiMonitor, event.detail.image);
  node.setDirtyCanvas(true, false);
}

function onDone(event) {
  const monitor = nodeFromEvent(event.detail)?.tiMonitor;
  if (monitor) showOutcome(monitor, event.detail);
}

app.registerExtension({
  name: "textual_inversion.TrainingMonitor",
  async setup() {
    api.addEventListener("textual_inversion.progress", onProgress);
    api.addEventListener("textual_inversion.preview", onPreview);
    api.addEventListener("textual_inversion.done", onDone);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      makePanel(this);
    });
    chainCallback(nodeType.prototype, "onExecuted", function (output) {
      showOutput(this, output);
    });
  },
});
