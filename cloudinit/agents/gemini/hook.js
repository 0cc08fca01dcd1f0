// Bivy's Gemini CLI adapter: maps Gemini CLI hook events (JSON on stdin, settings.json `hooks`;
// docs/hooks/reference.md shipped in @google/gemini-cli) into agent.json:
//   BeforeAgent, BeforeTool, AfterTool, BeforeModel, PreCompress -> working,
//   Notification with notification_type "ToolPermission" -> waiting,
//   AfterAgent -> idle, SessionStart / SessionEnd -> idle.
// Gemini parses stdout as JSON, so the adapter prints "{}" and nothing else.
"use strict";
const path = require("path");
const lib = require(path.join(__dirname, "..", "agent-state.js"));

const WORKING = new Set(["BeforeAgent", "BeforeTool", "AfterTool", "BeforeModel", "PreCompress"]);

function main() {
  const event = process.argv[2] || "";
  const payload = lib.readJson(lib.readStdin());
  const name = lib.text(payload.hook_event_name, 64) || event;
  if (WORKING.has(name)) {
    lib.record("working", name, "");
  } else if (name === "Notification") {
    if (payload.notification_type === "ToolPermission") {
      lib.record("waiting", name, lib.text(payload.message, 500) || "Permission requested");
    }
  } else if (name === "AfterAgent") {
    lib.record("idle", name, lib.text(payload.prompt_response, 500));
  } else if (name === "SessionStart" || name === "SessionEnd") {
    lib.record("idle", name, "");
  }
}

try {
  main();
} catch (e) {
  // A broken hook must never disturb the agent.
}
process.stdout.write("{}\n");
