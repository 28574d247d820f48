// Headless check of the pack's workflows in one ComfyUI front end: template list and card pictures, each workflow
// opened (all nodes in view? API form equals the twin?), screenshots; optionally a queued toy training run.
const { chromium } = require(require.resolve("playwright-core", { paths: [process.cwd()] }));
const fs = require("fs");
const [url, tag, outDir, vueMode, runTraining] = process.argv.slice(2);
const WF = require("path").resolve(__dirname, "../../workflows");
const names = fs.readdirSync(WF).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5));

(async () => {
  const profile = fs.mkdtempSync("/tmp/pwprof-");
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1400, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run"] });
  const page = ctx.pages()[0] || (await ctx.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const result = { tag, workflows: {}, cards: {} };
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.LiteGraph, null, { timeout: 120000 });
  await page.waitForTimeout(4000);
  for (let i = 0; i < 3; i++) { await page.keyboard.press("Escape"); await page.waitForTimeout(300); }
  // the template browser, on the pack's own section: its cards
  try {
    await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
    await page.waitForTimeout(2500);
    await page.locator('[role="dialog"]').getByText("textual_inversion", { exact: true }).first().click({ timeout: 5000 });
    await page.waitForTimeout(2500);
    await page.screenshot({ path: `${outDir}/${tag}_templates.png` });
  } catch (e) { errors.push("template browser: " + e); }
  for (let i = 0; i < 3; i++) { await page.keyboard.press("Escape"); await page.waitForTimeout(300); }
  result.version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  const templates = await page.evaluate(async () => (await fetch("/api/workflow_templates")).json());
  result.templates = templates.textual_inversion ?? templates;
  for (const n of names) {
    const r = await page.evaluate(async (n) => (await fetch(`/api/workflow_templates/textual_inversion/${n}.jpg`)).status, n);
    result.cards[n] = r;
  }
  if (vueMode === "vue") {
    result.vueSetting = await page.evaluate(async () => {
      const s = window.comfyAPI.app.app.extensionManager.setting;
      try { await s.set("Comfy.VueNodes.Enabled", true); return s.get("Comfy.VueNodes.Enabled"); } catch (e) { return String(e); }
    });
    await page.waitForTimeout(2000);
  }
  const viaTemplates = process.env.OPEN_VIA === "templates";
  for (const n of names) {
    const wf = JSON.parse(fs.readFileSync(`${WF}/${n}.json`, "utf8"));
    if (viaTemplates) {
      await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
      await page.waitForTimeout(2000);
      await page.locator('[role="dialog"]').getByText("textual_inversion", { exact: true }).first().click({ timeout: 5000 });
      await page.waitForTimeout(1500);
      await page.locator('[role="dialog"]').getByText(n, { exact: true }).first().click({ timeout: 5000 });
      await page.waitForTimeout(3000);
      for (let i = 0; i < 2; i++) { await page.keyboard.press("Escape"); await page.waitForTimeout(300); }
    }
    const info = await page.evaluate(async ([wf, viaTemplates]) => {
      const app = window.comfyAPI.app.app;
      if (!viaTemplates) await app.loadGraphData(wf, true, true, wf.id ?? "wf");
      await new Promise((r) => setTimeout(r, 1500));
      const ds = app.canvas.ds;
      const el = app.canvas.canvas;
      const w = el.clientWidth, h = el.clientHeight;
      const off = [];
      for (const node of app.graph._nodes) {
        const x0 = (node.pos[0] + ds.offset[0]) * ds.scale, y0 = (node.pos[1] - 30 + ds.offset[1]) * ds.scale;
        const x1 = (node.pos[0] + node.size[0] + ds.offset[0]) * ds.scale, y1 = (node.pos[1] + node.size[1] + ds.offset[1]) * ds.scale;
        if (x0 < -2 || y0 < -2 || x1 > w + 2 || y1 > h + 2) off.push(`${node.type}#${node.id}`);
      }
      const api = (await app.graphToPrompt()).output;
      return { scale: ds.scale, offset: ds.offset, canvas: [w, h], offscreen: off, api };
    }, [wf, viaTemplates]);
    const twin = JSON.parse(fs.readFileSync(`${WF}/api/${n}.json`, "utf8"));
    const strip = (g) => Object.fromEntries(Object.entries(g).map(([k, v]) => [k, { class_type: v.class_type, inputs: v.inputs }]));
    info.api_diff = { got: strip(info.api), want: strip(twin) };  // compared in Python (key order)
    delete info.api;
    await page.screenshot({ path: `${outDir}/${tag}_${n}.png` });
    result.workflows[n] = info;
  }
  if (runTraining === "train") {
    // the toy training graph, queued from the page with few steps: the trainer's size and pictures afterwards
    const wf = JSON.parse(fs.readFileSync(`${WF}/ti_train_embedding.json`, "utf8"));
    const before = await page.evaluate(async (wf) => {
      const app = window.comfyAPI.app.app;
      await app.loadGraphData(wf, true, true, "train");
      const t = app.graph._nodes.find((n) => n.type === "TITrainEmbedding");
      const set = (name, v) => { t.widgets.find((w) => w.name === name).value = v; };
      set("steps", 20); set("name", "fe-star-" + Date.now()); set("preview_every", 10); set("validate_every", 0);
      set("save_every", 0);
      return { size: [...t.size] };
    }, wf);
    for (let round = 0; round < 2; round++) {
      await page.evaluate(async () => { await window.comfyAPI.app.app.queuePrompt(0, 1); });
      await page.waitForTimeout(3000);
      if (round === 1) await page.screenshot({ path: `${outDir}/${tag}_during_second_run.png` });
      for (let i = 0; i < 300; i++) {
        const idle = await page.evaluate(async () => {
          const q = await (await fetch("/api/queue")).json();
          return q.queue_running.length === 0 && q.queue_pending.length === 0;
        });
        if (idle) break;
        await page.waitForTimeout(2000);
      }
      await page.waitForTimeout(2000);
      await page.screenshot({ path: `${outDir}/${tag}_after_run${round + 1}.png` });
      if (round === 0) {
        await page.evaluate(() => {
          const t = window.comfyAPI.app.app.graph._nodes.find((n) => n.type === "TITrainEmbedding");
          t.widgets.find((w) => w.name === "name").value = "fe-star-b-" + Date.now();
        });
      }
    }
    result.training = await page.evaluate((before) => {
      const app = window.comfyAPI.app.app;
      const t = app.graph._nodes.find((n) => n.type === "TITrainEmbedding");
      const box = (n) => [n.pos[0], n.pos[1] - 30, n.pos[0] + n.size[0], n.pos[1] + n.size[1]];
      const [a0, a1, a2, a3] = box(t);
      const overlaps = app.graph._nodes.filter((n) => n.id !== t.id).filter((n) => {
        const [b0, b1, b2, b3] = box(n); return !(a2 <= b0 || b2 <= a0 || a3 <= b1 || b3 <= a1); }).map((n) => n.type);
      const el = document.querySelector(`[data-node-id="${t.id}"]`);
      const dom = el ? [el.offsetWidth, el.offsetHeight] : null;
      const imgs = t.imgs?.length ?? 0;
      const out = app.nodeOutputs?.[String(t.id)];
      const previewShown = t.tiMonitor?.preview?.style.visibility === "visible";
      return { before, after: [...t.size], overlaps, node_images: imgs, ui_keys: out ? Object.keys(out) : null,
               vue_dom_size: dom, panel_preview_shown: previewShown, chart_points: t.tiMonitor?.losses.length };
    }, before);
  }
  result.errors = errors.slice(0, 20);
  fs.writeFileSync(`${outDir}/${tag}.json`, JSON.stringify(result, null, 1));
  console.log(JSON.stringify(result, null, 1));
  await ctx.close();
})().catch((e) => { console.error(e); process.exit(1); });
