// Bivy's Codex adapter: maps Codex's hook events and its `notify` program call into agent.json.
// Hooks (JSON on stdin, Claude-compatible names; developers.openai.com/codex/hooks):
//   UserPromptSubmit, PreToolUse, PostToolUse, SubagentStart/Stop, Pre/PostCompact -> working,
//   PermissionRequest -> waiting, Stop -> idle, SessionStart -> idle.
// notify (config.toml `notify = [...]`, JSON as the last argument; docs/config.md "notify"):
//   {"type": "agent-turn-complete", ...} -> idle.
// Usage: hook.js EVENT < payload.json    or    hook.js notify '{"type": ...}'
"use strict";
const path = require("path");
const lib = require(path.join(__dirname, "..", "agent-state.js"));

const WORKING = new Set(["UserPromptSubmit", "PreToolUse", "PostToolUse", "SubagentStart",
  "SubagentStop", "PreCompact", "PostCompact"]);

function main() {
  const event = process.argv[2] || "";
  if (event === "notify") {
    const payload = lib.readJson(process.argv[3] || "");
    if (payload.type === "agent-turn-complete") {
      lib.record("idle", "agent-turn-complete", lib.text(payload["last-assistant-message"], 500));
    }
    return;
  }
  const payload = lib.readJson(lib.readStdin());
  const name = lib.text(payload.hook_event_name, 64) || event;
  if (WORKING.has(name)) {
    lib.record("working", name, "");
  } else if (name === "PermissionRequest") {
    const tool = lib.text(payload.tool_name, 80);
    lib.record("waiting", name, "Permission requested" + (tool ? ": " + tool : ""));
  } else if (name === "Stop") {
    lib.record("idle", name, lib.text(payload.last_assistant_message, 500));
  } else if (name === "SessionStart") {
    lib.record("idle", name, "");
  }
}

try {
  main();
} catch (e) {
  // A broken hook must never disturb the agent.
}
