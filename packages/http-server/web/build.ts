/**
 * Builds the web app: `web/src` → `web-dist/` (served by `src/WebApp.ts`).
 * Scripts and styles get content-hashed names under `assets/`; the shell
 * (`index.html`), the service worker (`sw.js`, which must keep its URL) and
 * the manifest keep theirs. The service worker is told the hashed names of
 * the shell it caches. Written to a temporary folder and swapped in whole,
 * so a running server never reads half a build.
 *
 *     tsx web/build.ts            build
 *     tsx web/build.ts --if-missing   build only when there is no build yet
 */
import * as esbuild from "esbuild"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const webDir = path.dirname(fileURLToPath(import.meta.url))
const outDir = path.resolve(webDir, "../web-dist")

if (process.argv.includes("--if-missing") && fs.existsSync(path.join(outDir, "index.html"))) process.exit(0)

const tmp = `${outDir}.tmp-${process.pid}`
fs.rmSync(tmp, { recursive: true, force: true })

const app = await esbuild.build({
  entryPoints: { app: path.join(webDir, "src/main.tsx") },
  outdir: path.join(tmp, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020"],
  jsx: "automatic",
  jsxImportSource: "preact",
  metafile: true,
  legalComments: "none",
  logLevel: "warning"
})

const outputs = Object.keys(app.metafile.outputs).map((file) => "/" + path.relative(tmp, file).split(path.sep).join("/"))
const script = outputs.find((f) => f.endsWith(".js"))
const style = outputs.find((f) => f.endsWith(".css"))
if (script === undefined || style === undefined) throw new Error(`the build made no script or no style: ${outputs.join(", ")}`)

const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="theme-color" content="#1d3557">
<title>Voice journal</title>
<link rel="manifest" href="/manifest.webmanifest">
<link rel="icon" href="/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="${style}">
<script type="module" src="${script}"></script>
</head>
<body>
<div id="app"><noscript>The voice journal needs JavaScript.</noscript></div>
</body>
</html>
`
fs.writeFileSync(path.join(tmp, "index.html"), html)

const manifest = {
  name: "Voice journal",
  short_name: "Journal",
  description: "Record a voice note; watch it become a journal entry.",
  start_url: "/app",
  scope: "/",
  display: "standalone",
  background_color: "#f7f7f2",
  theme_color: "#1d3557",
  icons: [{ src: "/icon.svg", sizes: "any", type: "image/svg+xml", purpose: "any" }]
}
fs.writeFileSync(path.join(tmp, "manifest.webmanifest"), JSON.stringify(manifest, null, 2))
fs.copyFileSync(path.join(webDir, "icon.svg"), path.join(tmp, "icon.svg"))

// the shell the service worker caches, and a version that changes with it (a new build replaces the old cache)
const shell = ["/app", "/manifest.webmanifest", "/icon.svg", ...outputs]
const version = createHash("sha256").update(html).update(outputs.join("\n")).digest("hex").slice(0, 12)
await esbuild.build({
  entryPoints: [path.join(webDir, "src/sw.ts")],
  outfile: path.join(tmp, "sw.js"),
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  define: { __SHELL__: JSON.stringify(shell), __VERSION__: JSON.stringify(version) },
  logLevel: "warning"
})

fs.rmSync(outDir, { recursive: true, force: true })
fs.renameSync(tmp, outDir)
console.log(`web app built into ${path.relative(process.cwd(), outDir) || "."} (${version})`)
