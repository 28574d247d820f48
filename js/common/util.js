// Shared helpers of the textual_inversion front-end extensions.

export const { app } = window.comfyAPI.app;
export const { api } = window.comfyAPI.api;

// Call `callback` after the original `object[property]` (if any), keeping its return value.
export function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function () {
    const result = original?.apply(this, arguments);
    callback.apply(this, arguments);
    return result;
  };
}

// The graph node an event's `node` id (ComfyUI's UNIQUE_ID) refers to, or null.
export function nodeFromEvent(detail) {
  const id = String(detail?.node ?? "");
  return app.graph?.getNodeById(Number(id.split(":").pop())) ?? null;
}

// A DOM widget holding `element` below the node's other widgets. The option keeps it out of the API prompt,
// `widget.serialize` out of a saved workflow's widgets_values.
export function addPanel(node, name, element, height) {
  const widget = node.addDOMWidget(name, "textual_inversion_panel", element, { serialize: false });
  widget.serialize = false;
  widget.tiHeight = height;
  widget.computeSize = (width) => [width, widget.tiHeight];
  return widget;
}

// A panel of monospaced text: { element (a <pre>), widget }.
export function addTextPanel(node, name, height) {
  const element = document.createElement("pre");
  element.style.cssText = "margin:0;font:11px monospace;color:#ccc;white-space:pre-wrap;overflow:auto;";
  return { element, widget: addPanel(node, name, element, height) };
}

// Grow a panel, and its node, until all of `element`'s content shows (never shrink it).
export function fitPanel(node, widget, element) {
  requestAnimationFrame(() => {
    widget.tiHeight = Math.max(widget.tiHeight, element.scrollHeight + 20);
    node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
    node.setDirtyCanvas?.(true, true);
  });
}

// The ui output the server last sent for `node` (kept by the front end across a tab switch), or undefined.
export function lastOutput(node) {
  return app.nodeOutputs?.[String(node.id)];
}
