// TILoadImages and TISaveEmbedding: show the text a run returns on the node (what was loaded and what was
// skipped; where the embedding was saved), which ComfyUI's front end would otherwise keep to itself.
import { addPanel, app, chainCallback } from "./common/util.js";

const NODES = new Set(["TILoadImages", "TISaveEmbedding"]);

app.registerExtension({
  name: "textual_inversion.NodeNotes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      const pre = document.createElement("pre");
      pre.style.cssText = "margin:0;font:11px monospace;color:#ccc;white-space:pre-wrap;overflow:auto;";
      pre.textContent = "not run yet";
      this.tiNotes = pre;
      addPanel(this, "notes", pre, nodeData.name === "TILoadImages" ? 120 : 40);
    });
    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      const lines = message?.text;
      if (this.tiNotes && Array.isArray(lines)) this.tiNotes.textContent = lines.join("\n");
    });
  },
});
