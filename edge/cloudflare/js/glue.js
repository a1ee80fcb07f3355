// Per-request glue the Rust side calls once, where wasm-bindgen would cross into JavaScript
// once per header and string (src/convert.rs says why; BENCHMARKS.md has the numbers).

// "method\nurl\nname\nvalue\n…": HTTP forbids line breaks in header names and values.
export function requestHead(req) {
  let head = req.method + "\n" + req.url;
  for (const [name, value] of req.headers) head += "\n" + name + "\n" + value;
  return head;
}

// `head` is "name\nvalue\n…"; `body` a view of wasm memory, copied before Rust frees it.
export function respond(status, head, body) {
  // `append` calls: measured cheaper in workerd than handing the constructor pairs or a record.
  const headers = new Headers();
  if (head.length > 0) {
    const parts = head.split("\n");
    for (let i = 0; i + 1 < parts.length; i += 2) headers.append(parts[i], parts[i + 1]);
  }
  return new Response(body.length > 0 ? body.slice() : null, { status, headers });
}
