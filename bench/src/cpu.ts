/**
 * CPU time from /proc (Linux): what a process, or every process of a
 * program, has used so far — user + system, all threads, in ms.
 */
import * as fs from "node:fs"

/** Fields after the command name (which may hold spaces), from field 3 on. */
const statFields = (pid: number | string): ReadonlyArray<string> | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  } catch {
    return undefined // the process ended between listing and reading: its time went to its parent's children fields
  }
}

const ticksToMs = (ticks: number) => (ticks * 1000) / 100 // clock ticks (USER_HZ = 100)

/** CPU time the process has used so far (utime + stime, fields 14 and 15). */
export const cpuMs = (pid: number): number => {
  const fields = statFields(pid)
  return fields === undefined ? 0 : ticksToMs(Number(fields[11]) + Number(fields[12]))
}

/**
 * CPU time of every running process named `command` (e.g. "postgres"),
 * including what their ended children used (cutime + cstime: a finished
 * backend's time lands in the postmaster's). Undefined where /proc is not.
 */
export const programCpuMs = (command: string): number | undefined => {
  if (!fs.existsSync("/proc/self/stat")) return undefined
  let ticks = 0
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue
    let comm: string
    try {
      comm = fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim()
    } catch {
      continue
    }
    if (comm !== command) continue
    const f = statFields(pid)
    if (f !== undefined) ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
  }
  return ticksToMs(ticks)
}
