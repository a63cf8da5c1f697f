#!/usr/bin/env node
/**
 * The `voice-journal` executable.
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { CliLive, run } from "./Cli.js"

run(process.argv).pipe(Effect.provide(CliLive), NodeRuntime.runMain)
