// TITrainEmbedding: a live loss chart (raw loss grey, smoothed blue, validation loss red) and the latest preview
// image, fed by the
// node's "textual_inversion.progress" / ".preview" / ".done" PromptServer events.
import { addPanel, api, app, chainCallback, lastOutput, nodeFromEvent } from "./common/util.js";

const NODE = "TITrainEmbedding";

function makePanel(node) {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:11px monospace;color:#ccc;";
  const text = document.createElement("div");
  text.textContent = "not trained yet";
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 120;
  canvas.style.cssText = "width:100%;height:120px;background:#1e1e1e;border-radius:4px;";
  const preview = document.createElement("img");
  preview.style.cssText = "max-width:100%;max-height:160px;object-fit:contain;display:none;";
  root.append(text, canvas, preview);
  addPanel(node, "training", root, 310);
  node.tiMonitor = { text, canvas, preview, losses: [], smoothed: [], validation: [] };
  // after a tab switch the graph is rebuilt: the live chart is gone, but the last run's summary is kept
  setTimeout(() => {
    const summary = lastOutput(node)?.text?.[0];
    if (summary) text.textContent = summary;
  }, 0);
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
  }
  monitor.losses.push(d.loss);
  monitor.smoothed.push(d.smoothed_loss);
  if (Number.isFinite(d.val_loss)) monitor.validation.push([d.step, d.val_loss]);
  const last = monitor.validation.at(-1);
  const val = last ? `  validation ${last[1].toFixed(4)} (step ${last[0]})` : "";
  const eta = Number.isFinite(d.eta) ? `, ${Math.round(d.eta)} s left` : "";
  const num = (v, f) => (Number.isFinite(v) ? f(v) : "-");
  monitor.text.textContent =
    `${d.name}: step ${d.step}/${d.steps}  loss ${num(d.loss, (v) => v.toFixed(4))}  ` +
    `smoothed ${num(d.smoothed_loss, (v) => v.toFixed(4))}${val}  lr ${num(d.lr, (v) => v.toExponential(2))}${eta}`;
  drawChart(monitor);
  node.setDirtyCanvas(true, false);
}

function onPreview(event) {
  const monitor = nodeFromEvent(event.detail)?.tiMonitor;
  if (!monitor) return;
  monitor.preview.src = `data:image/png;base64,${event.detail.image}`;
  monitor.preview.title = `preview at step ${event.detail.step}`;
  monitor.preview.style.display = "block";
}

function onDone(event) {
  const d = event.detail;
  const monitor = nodeFromEvent(d)?.tiMonitor;
  if (!monitor) return;
  const how = d.stopped ? "stopped" : d.early_stopped ? "early stop (validation loss flat)" : "done";
  monitor.text.textContent = `${d.name}: ${how} at step ${d.step}, saved ${d.path ?? "nothing"}`;
}

app.registerExtension({
  name: "textual_inversion.TrainingMonitor",
  async setup() {
    api.addEventListener("textual_inversion.progress", onProgress);
    api.addEventListener("textual_inversion.preview", onPreview);
    api.addEventListener("textual_inversion.done", onDone);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      makePanel(this);
    });
  },
});
