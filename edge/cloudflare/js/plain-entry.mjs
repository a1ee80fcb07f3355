// Post-build step of edge/cloudflare/build.sh: makes the bundle's default export a plain module
// handler instead of worker-build's `WorkerEntrypoint` subclass behind a Proxy, which builds a
// class instance and two Proxies per request (15–20% of the worker's throughput here;
// BENCHMARKS.md, Cloudflare). worker-build's recovery after a panic stays as it is: the handler
// calls the same `checkReinitialize` / `handleMaybeCritical` the Proxy does. The bundle is
// built unminified (NO_MINIFY) so these names are stable; any mismatch fails the build.
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
let js = readFileSync(path, "utf8");
const expect = [
  "function checkReinitialize() {",
  "function handleMaybeCritical(e) {",
  // `fetch` here is the wasm export (edgefront's entry::fetch), as the default handler calls it.
  "Entrypoint.prototype.fetch = function fetch2(arg) {\n  return fetch.call(this, arg, this.env, this.ctx);\n};",
  "  shim_default as default\n",
];
for (const text of expect) {
  if (js.split(text).length !== 2) {
    console.error(`plain-entry: expected exactly one ${JSON.stringify(text)} in ${path}; worker-build changed?`);
    process.exit(1);
  }
}
const entry = `
// edge/cloudflare/js/plain-entry.mjs: the module handler workerd calls.
var edgefrontEntry = {
  // Not \`async\`: an answer the wasm side returns directly goes back without a promise.
  fetch(request, env, ctx) {
    checkReinitialize();
    let answer;
    try {
      answer = fetch(request, env, ctx);
    } catch (e) {
      handleMaybeCritical(e);
      throw e;
    }
    if (answer instanceof Promise) {
      return answer.catch((e) => {
        handleMaybeCritical(e);
        throw e;
      });
    }
    return answer;
  },
};
export {`;
js = js.replace("\nexport {", entry).replace("  shim_default as default\n", "  edgefrontEntry as default\n");
writeFileSync(path, js);
