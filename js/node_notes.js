// TILoadImages and TISaveEmbedding: show the text a run returns on the node (what was loaded and what was
// skipped; where the embedding was saved), which ComfyUI's front end would otherwise keep to itself.
import { addTextPanel, app, chainCallback, fitPanel, lastOutput } from "./common/util.js";

const NODES = new Set(["TILoadImages", "TISaveEmbedding"]);

function show(node, lines) {
  if (!node.tiNotes || !Array.isArray(lines)) return;
  node.tiNotes.element.textContent = lines.join("\n");
  fitPanel(node, node.tiNotes.widget, node.tiNotes.element);
}

app.registerExtension({
  name: "textual_inversion.NodeNotes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      this.tiNotes = addTextPanel(this, "notes", nodeData.name === "TILoadImages" ? 120 : 56);
      this.tiNotes.element.textContent = "(shown after a run)";
      // after a tab switch the graph is rebuilt: show what the last run said, as the image previews do
      setTimeout(() => show(this, lastOutput(this)?.text), 0);
    });
    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      show(this, message?.text);
    });
  },
});
