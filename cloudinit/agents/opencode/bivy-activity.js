// Bivy's OpenCode plugin: maps OpenCode's bus events (plugin `event` hook; opencode.ai/docs/plugins,
// payload types in packages/sdk/js/src/v2/gen/types.gen.ts) into agent.json:
//   session.status {status: {type: "busy" | "retry"}} -> working, {type: "idle"} -> idle,
//   session.idle -> idle, session.error -> idle (with the error's message),
//   permission.asked / question.asked -> waiting,
//   permission.replied / question.replied -> working (the turn goes on after the answer).
// Installed as $OPENCODE_CONFIG_DIR/plugins/bivy-activity.js (a global plugin).
import fs from "node:fs";
import path from "node:path";

const STATE_DIR = process.env.BIVY_AGENT_STATE_DIR || "{{ container_state_dir }}";

function text(value, limit) {
  return typeof value === "string" ? value.slice(0, limit) : "";
}

function stateFor(event) {
  const type = event && typeof event.type === "string" ? event.type : "";
  const props = event && event.properties && typeof event.properties === "object"
    ? event.properties : {};
  if (type === "session.status") {
    const kind = props.status && props.status.type;
    if (kind === "busy" || kind === "retry") return ["working", text(props.status.message, 500)];
    if (kind === "idle") return ["idle", ""];
    return null;
  }
  if (type === "session.idle") return ["idle", ""];
  if (type === "session.error") {
    const error = props.error && props.error.data ? props.error.data.message : "";
    return ["idle", text(error, 500) || "the session ended with an error"];
  }
  if (type === "permission.asked") {
    return ["waiting", "Permission requested" + (props.permission ? ": " + text(props.permission, 80) : "")];
  }
  if (type === "question.asked") return ["waiting", "Question for you"];
  if (type === "permission.replied" || type === "question.replied") return ["working", ""];
  return null;
}

function record(event) {
  const result = stateFor(event);
  if (!result) return;
  const entry = {
    state: result[0],
    event: text(event.type, 64),
    message: result[1],
    background_tasks: 0,
    updated_at: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
  };
  const tmp = path.join(STATE_DIR, ".agent." + process.pid);
  fs.writeFileSync(tmp, JSON.stringify(entry) + "\n", { mode: 0o644 });
  fs.renameSync(tmp, path.join(STATE_DIR, "agent.json"));
}

export const BivyActivity = async () => ({
  event: async ({ event }) => {
    try {
      record(event);
    } catch (e) {
      // A broken plugin must never disturb the agent.
    }
  },
});
