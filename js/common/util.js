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

// A DOM widget holding `element` below the node's other widgets.
export function addPanel(node, name, element, height) {
  const widget = node.addDOMWidget(name, "textual_inversion_panel", element, { serialize: false });
  widget.computeSize = (width) => [width, height];
  return widget;
}
