// TILoadEmbedding: show the chosen embedding's format, vectors, widths and metadata on the node, from the
// /textual_inversion/embeddings/info route when the choice changes and from the node's output when it runs.
import { addTextPanel, api, app, chainCallback } from "./common/util.js";

const NODE = "TILoadEmbedding";

function describe(info) {
  if (info.error) return `${info.file}: ${info.error}`;
  const widths = Object.entries(info.widths ?? {}).map(([k, w]) => `${k} ${w}`).join(", ");
  const meta = Object.entries(info.metadata ?? {})
    .filter(([k]) => k !== "training")
    .map(([k, v]) => `${k}: ${v}`);
  return [`${info.name} (${info.format})`, `${info.vectors} vector(s): ${widths}`, ...meta].join("\n");
}

async function fetchInfo(node, name) {
  if (!name) return;
  try {
    const response = await api.fetchApi(`/textual_inversion/embeddings/info?name=${encodeURIComponent(name)}`);
    node.tiInfo.textContent = describe(await response.json());
  } catch (error) {
    node.tiInfo.textContent = `could not read ${name}: ${error}`;
  }
}

app.registerExtension({
  name: "textual_inversion.EmbeddingInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      this.tiInfo = addTextPanel(this, "info", 110).element;
      const combo = this.widgets?.find((w) => w.name === "embedding_name");
      if (combo) {
        chainCallback(combo, "callback", (value) => fetchInfo(this, value));
        setTimeout(() => fetchInfo(this, combo.value), 0);
      }
    });
    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      const text = message?.text?.[0];
      if (text && this.tiInfo) this.tiInfo.textContent = describe(JSON.parse(text));
    });
  },
});
