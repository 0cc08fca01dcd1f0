// Bivy's GitHub Copilot CLI adapter: maps Copilot CLI hook events (camelCase format, JSON on
// stdin, $COPILOT_HOME/hooks/*.json; docs.github.com/copilot/reference/hooks-reference) into
// agent.json:
//   userPromptSubmitted, preToolUse, postToolUse, postToolUseFailure, subagentStart,
//   subagentStop, preCompact -> working,
//   notification with notification_type permission_prompt / elicitation_dialog -> waiting,
//   agentStop -> idle, sessionStart / sessionEnd -> idle.
// The camelCase payloads carry no event name, so the event comes from the command line.
// permissionRequest is not used: it fires before Copilot's own rules decide, not only when the
// user is asked.
"use strict";
const path = require("path");
const lib = require(path.join(__dirname, "..", "agent-state.js"));

const WORKING = new Set(["userPromptSubmitted", "preToolUse", "postToolUse", "postToolUseFailure",
  "subagentStart", "subagentStop", "preCompact"]);
const ASKING = new Set(["permission_prompt", "elicitation_dialog"]);

function main() {
  const event = process.argv[2] || "";
  const payload = lib.readJson(lib.readStdin());
  if (WORKING.has(event)) {
    lib.record("working", event, "");
  } else if (event === "notification") {
    if (ASKING.has(payload.notification_type)) {
      lib.record("waiting", event, lib.text(payload.message, 500) || lib.text(payload.title, 200));
    }
  } else if (event === "agentStop") {
    lib.record("idle", event, "");
  } else if (event === "sessionStart" || event === "sessionEnd") {
    lib.record("idle", event, "");
  }
}

try {
  main();
} catch (e) {
  // A broken hook must never disturb the agent.
}
