// MusePose Express: what a pack node said during its last run (memory choice, warnings, summary), kept under
// the node in a read-only text box after the run ends.
//
// The nodes send their lines as a UI output, {"musepose_messages": ["line\nline..."]} (nodes/host/messages.py
// MESSAGES_UI_KEY); the frontend hands it to onExecuted once the node has run. The box is added on the first
// message, so a saved workflow loads exactly as before (same widgets, same positional widgets_values), and it
// is never saved: serialize = false keeps it out of the workflow's widgets_values, options.serialize = false
// out of the prompt. Long texts scroll inside the box; once the run has ended, a node too small to show its
// widgets and a few lines of the box grows (not earlier: while a node runs, the frontend's own progress text
// takes room under it).
//
// The frontend's progress text (a widget named "$$node-text-preview") shows the same lines while the node
// runs. 1.42 and 1.58 take it away when the run ends; 1.35 keeps it, clipped to a few lines, and saves its
// text into widgets_values (its serialize flag is left unset). On our nodes, once the run has ended and our
// box shows the lines, it is removed as the newer frontends do; the next run adds it again.
//
// Only the extension API that frontends 1.35 to 1.58 share: app.registerExtension, beforeRegisterNodeDef,
// onExecuted, LGraphNode.addDOMWidget, and the api's run events.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const UI_KEY = "musepose_messages";
const WIDGET_NAME = "musepose_messages";
const FONT_PX = 11;
const LINE_PX = 14;
const MIN_LINES = 3; // always visible without scrolling; the box fills whatever room the node has beyond that

function messageBox(node) {
  const existing = (node.widgets || []).find((w) => w.name === WIDGET_NAME);
  if (existing) return existing;
  const box = document.createElement("textarea");
  box.className = "comfy-multiline-input musepose-messages";
  box.readOnly = true;
  box.spellcheck = false;
  box.wrap = "soft";
  box.title = "MusePose: messages of the last run (not saved with the workflow)";
  box.dataset.museposeMessages = String(node.id);
  Object.assign(box.style, {
    fontSize: `${FONT_PX}px`, lineHeight: `${LINE_PX}px`, overflowY: "auto", whiteSpace: "pre-wrap",
    resize: "none", boxSizing: "border-box", padding: "3px 5px",
  });
  // Keep the canvas from taking the wheel and the pointer: the text scrolls and can be selected and copied.
  box.addEventListener("wheel", (e) => e.stopPropagation(), { passive: true });
  box.addEventListener("pointerdown", (e) => e.stopPropagation());
  const widget = node.addDOMWidget(WIDGET_NAME, "musepose_messages", box, {
    getValue: () => box.value,
    setValue: (value) => { box.value = value == null ? "" : String(value); },
    getMinHeight: () => MIN_LINES * LINE_PX + 8,
    hideOnZoom: false,
    serialize: false,
  });
  widget.serialize = false; // not in widgets_values (every frontend's LGraphNode.serialize skips it)
  widget.options.serialize = false; // not in the prompt
  widget.musepose_box = box;
  return widget;
}

const PROGRESS_TEXT = "$$node-text-preview"; // the frontend's progress text widget (1.35 to 1.58)
const shown = new Set(); // nodes given messages in the current run: fitted when it ends

function show(node, lines) {
  const text = Array.isArray(lines) ? lines.join("\n") : String(lines ?? "");
  const widget = messageBox(node);
  widget.value = text;
  if (widget.musepose_box) widget.musepose_box.value = text;
  shown.add(node);
  node.setDirtyCanvas?.(true, true);
}

function fit() {
  // grow (never shrink) each node whose widgets and the box's minimum no longer fit
  for (const node of shown) {
    if (!node.graph) continue;
    const progress = (node.widgets || []).find((w) => w.name === PROGRESS_TEXT);
    if (progress) {
      if (typeof node.removeWidget === "function") node.removeWidget(progress);
      else { node.widgets.splice(node.widgets.indexOf(progress), 1); progress.onRemove?.(); }
    }
    const least = node.computeSize();
    if (node.size[0] < least[0] || node.size[1] < least[1]) {
      node.setSize([Math.max(node.size[0], least[0]), Math.max(node.size[1], least[1])]);
      node.setDirtyCanvas?.(true, true);
    }
  }
  shown.clear();
}

for (const event of ["execution_success", "execution_error", "execution_interrupted"]) {
  // after the frontend's own handlers of the run's end (they take the progress text away)
  api.addEventListener(event, () => setTimeout(fit, 250));
}

app.registerExtension({
  name: "MusePoseExpress.Messages",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.name || "").startsWith("MusePose")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const lines = output?.[UI_KEY];
      if (lines != null && (!Array.isArray(lines) || lines.length)) show(this, lines);
      return result;
    };
  },
});
