// Per-request glue the Rust side calls once, where wasm-bindgen would cross into JavaScript
// once per header and string (src/convert.rs says why; BENCHMARKS.md has the numbers).

// "method\nurl\nname\nvalue\n…": HTTP forbids line breaks in header names and values.
export function requestHead(req) {
  let head = req.method + "\n" + req.url;
  for (const [name, value] of req.headers) head += "\n" + name + "\n" + value;
  return head;
}

// Header sets already built, by their `head` text. Answers repeat their headers (a hot
// product's page, a category page, the problem answers), and `new Response` copies the headers
// it is given, so one `Headers` serves every answer with the same text. Bounded: emptied when full.
const headerSets = new Map();
const HEADER_SETS_KEPT = 256;

// `head` is "name\nvalue\n…"; `body` a view of wasm memory, copied before Rust frees it.
export function respond(status, head, body) {
  let headers = headerSets.get(head);
  if (headers === undefined) {
    // `append` calls: measured cheaper in workerd than handing the constructor pairs or a record.
    headers = new Headers();
    if (head.length > 0) {
      const parts = head.split("\n");
      for (let i = 0; i + 1 < parts.length; i += 2) headers.append(parts[i], parts[i + 1]);
    }
    if (headerSets.size >= HEADER_SETS_KEPT) headerSets.clear();
    headerSets.set(head, headers);
  }
  return new Response(body.length > 0 ? body.slice() : null, { status, headers });
}
