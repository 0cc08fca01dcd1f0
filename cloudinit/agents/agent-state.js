// Bivy's agent.json writer, shared by the hook adapters of the agents other than Claude Code
// (cloudinit/agents/<agent>/hook.js). The contract is the one cloudinit/scripts/agent-hook.js
// writes for Claude and the VM's idle monitor reads: {state: working|waiting|idle, event, message,
// background_tasks, updated_at}. The file is replaced atomically; a failure never reaches the agent.
"use strict";
const fs = require("fs");
const path = require("path");

const STATES = new Set(["working", "waiting", "idle"]);

function stateDir() {
  return process.env.BIVY_AGENT_STATE_DIR || "{{ container_state_dir }}";
}

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

function readStdin() {
  try {
    return fs.readFileSync(0, "utf8");
  } catch (e) {
    return "";
  }
}

function previous() {
  try {
    return readJson(fs.readFileSync(path.join(stateDir(), "agent.json"), "utf8"));
  } catch (e) {
    return {};
  }
}

// Writes the record; `state` must be one of working / waiting / idle.
function record(state, event, message) {
  if (!STATES.has(state)) return;
  const dir = stateDir();
  const entry = {
    state: state,
    event: text(event, 64),
    message: text(message, 500),
    background_tasks: 0,
    updated_at: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
  };
  const tmp = path.join(dir, ".agent." + process.pid);
  fs.writeFileSync(tmp, JSON.stringify(entry) + "\n", { mode: 0o644 });
  fs.renameSync(tmp, path.join(dir, "agent.json"));
}

module.exports = { readJson, readStdin, previous, record, text };
