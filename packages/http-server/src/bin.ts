#!/usr/bin/env node
/**
 * The `voice-journal` executable.
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { CliLive, run } from "./Cli.js"
import { layerLogger } from "./Config.js"

// VJ_LOG_FORMAT=json: JSON lines instead of runMain's pretty logger (layerLogger validates the value)
run(process.argv).pipe(
  Effect.provide(CliLive),
  Effect.provide(layerLogger),
  NodeRuntime.runMain({ disablePrettyLogger: process.env.VJ_LOG_FORMAT === "json" })
)
