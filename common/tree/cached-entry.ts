// What a cached listing of a /mars directory holds per name (dir-cache.ts, lazy-listing.ts).
export type CachedEntry =
  | { kind: 'link'; value: string; stampUs: number }
  | { kind: 'file' }
  | { kind: 'dir' }
  | { kind: 'other' };
