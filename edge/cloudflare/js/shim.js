// The worker's entry module: worker-build's CUSTOM_SHIM template (edge/cloudflare/build.sh).
//
// Why not worker-build's default entry: it answers through a `WorkerEntrypoint` subclass wrapped
// in a Proxy that re-wraps every method on every request, which costs the storefront a large
// share of its per-request time (BENCHMARKS.md, Cloudflare). This entry is a plain module
// worker. What the default entry adds — starting a fresh wasm instance after a trap (a Rust
// panic aborts) — is kept here in a few lines: a trap marks the instance broken, and the next
// call runs on a new one; a counters object made by the broken instance is made anew.
import * as imports from "./index_bg.js";
import wasmModule from "./index.wasm";
$SNIPPET_JS_IMPORTS

let generation = 0;
let broken = false;

function instantiate() {
  const instance = new WebAssembly.Instance(wasmModule, {
    "./index_bg.js": imports,
    $SNIPPET_WASM_IMPORTS
  });
  imports.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start?.();
  generation++;
  broken = false;
}
instantiate();

function ready() {
  if (broken) {
    console.error("edgefront: the wasm instance trapped; starting a new one");
    instantiate();
  }
}

function trapped(e) {
  if (e instanceof WebAssembly.RuntimeError) broken = true;
  throw e;
}

export default {
  async fetch(request, env, ctx) {
    ready();
    try {
      return await imports.fetch(request, env, ctx);
    } catch (e) {
      trapped(e);
    }
  },
};

// The Durable Object class: the Rust object, made again when the instance it lives in was
// replaced (its in-memory state is gone with that instance; durable state is in storage).
export class CountersObject {
  constructor(state, env) {
    this.state = state;
    this.env = env;
    this.make();
  }

  make() {
    this.inner = new imports.CountersObject(this.state, this.env);
    this.generation = generation;
  }

  current() {
    ready();
    if (this.generation !== generation) this.make();
    return this.inner;
  }

  async fetch(request) {
    try {
      return await this.current().fetch(request);
    } catch (e) {
      trapped(e);
    }
  }

  async alarm(info) {
    try {
      return await this.current().alarm(info);
    } catch (e) {
      trapped(e);
    }
  }
}
