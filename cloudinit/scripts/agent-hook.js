// Bivy's Claude Code hook: maps hook events (JSON on stdin) to the agent state in agent.json.
// working: a prompt or tool call is in progress; waiting: Claude asks for permission or input;
// idle: the turn ended. background_tasks comes from the Stop payload.
"use strict";
const fs = require("fs");
const path = require("path");

const stateDir = process.env.BIVY_AGENT_STATE_DIR || "{{ container_state_dir }}";
const file = path.join(stateDir, "agent.json");
const event = process.argv[2] || "";
const WORKING = new Set(["UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolUseFailure",
  "SubagentStart", "SubagentStop", "PreCompact", "PostCompact"]);
const ASKING = new Set(["permission_prompt", "elicitation_dialog", "elicitation_url_dialog",
  "agent_needs_input"]);

function readJson(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch (e) {
    return {};
  }
}

function text(value, limit) {
  return typeof value === "string" ? value.slice(0, limit) : "";
}

function main() {
  let input = "";
  try {
    input = fs.readFileSync(0, "utf8");
  } catch (e) { /* no stdin */ }
  const payload = readJson(input);
  let previous = {};
  try {
    previous = readJson(fs.readFileSync(file, "utf8"));
  } catch (e) { /* first event */ }
  const name = text(payload.hook_event_name, 64) || event;
  let state = previous.state || "idle";
  let message = "";
  let background = Number.isInteger(previous.background_tasks) ? previous.background_tasks : 0;

  if (WORKING.has(name)) {
    state = "working";
    if (name === "UserPromptSubmit") background = 0;
  } else if (name === "PermissionRequest") {
    state = "waiting";
    message = "Permission requested" + (payload.tool_name ? ": " + text(payload.tool_name, 80) : "");
  } else if (name === "Notification") {
    const type = text(payload.notification_type, 64);
    message = text(payload.message, 500);
    if (ASKING.has(type)) state = "waiting";
    else if (type === "idle_prompt") state = "idle";
  } else if (name === "Stop") {
    state = "idle";
    background = Array.isArray(payload.background_tasks) ? payload.background_tasks.length : 0;
    message = text(payload.last_assistant_message, 500);
  } else if (name === "StopFailure") {
    state = "idle";
    message = text(payload.error, 500) || text(payload.message, 500) || "the turn ended with an error";
  } else if (name === "SessionStart" || name === "SessionEnd") {
    state = "idle";
    background = 0;
  } else {
    return;
  }
  const record = {
    state: state,
    event: name,
    message: message,
    background_tasks: background,
    updated_at: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
  };
  const tmp = path.join(stateDir, ".agent." + process.pid);
  fs.writeFileSync(tmp, JSON.stringify(record) + "\n", { mode: 0o644 });
  fs.renameSync(tmp, file);
}

try {
  main();
} catch (e) {
  // A broken hook must never disturb the agent.
}
