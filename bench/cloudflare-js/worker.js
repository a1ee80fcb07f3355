// Baseline for the Rust worker's catalog routes (BENCHMARKS.md, issue 4): the same published
// catalog, in memory, served by a small JavaScript worker. Not product code.
import published from "./catalog.json";

const bySlug = new Map();
const byCategory = new Map();
for (const p of published.products) {
  if (!p.active) continue;
  // Serialized once, as the Rust worker keeps pre-serialized product views.
  const entry = { json: JSON.stringify(p) };
  bySlug.set(p.slug, entry);
  for (let i = 1; i <= p.category.length; i++) {
    const key = p.category.slice(0, i).join("/");
    if (!byCategory.has(key)) byCategory.set(key, []);
    byCategory.get(key).push(entry);
  }
}
const all = [...bySlug.values()];
const headers = { "content-type": "application/json", "cache-control": "public, max-age=30" };

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/v1/products") {
      const category = url.searchParams.get("category");
      const limit = Math.min(Number(url.searchParams.get("limit") || 24), 100);
      const items = (category ? byCategory.get(category) || [] : all).slice(0, limit);
      const body = `{"items":[${items.map((e) => e.json).join(",")}],"catalog_version":${published.version}}`;
      return new Response(body, { headers });
    }
    const m = url.pathname.match(/^\/v1\/products\/([^/]+)$/);
    if (m) {
      const entry = bySlug.get(m[1]);
      if (entry) return new Response(entry.json, { headers });
      return new Response('{"code":"not_found"}', { status: 404, headers });
    }
    return new Response('{"code":"route_not_found"}', { status: 404, headers });
  },
};
