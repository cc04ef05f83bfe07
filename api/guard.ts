// Browser-facing guards. A web page a lab user visits can make the browser send requests to the API:
// by DNS rebinding (a name of the page's own that later resolves to 127.0.0.1, so the browser treats
// the API as same-origin) or by plain cross-origin requests. Bearer tokens stop the first when they are
// on; without tokens the loopback bind is the only barrier, so the Host header must name loopback (or
// a host the operator listed). Unsafe methods from another origin are refused in both modes.
import { isIP } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { HttpProblem } from './problem.ts';

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The host name of a Host header value, lower case, without port or IPv6 brackets; undefined if malformed. */
export function hostName(host: string): string | undefined {
  const m = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/i.exec(host.trim());
  if (!m) return undefined;
  return m[1]!.toLowerCase().replace(/^\[|\]$/g, '');
}

/** Loopback names no DNS answer can stand for: localhost and loopback address literals. */
export function isLoopbackName(name: string): boolean {
  if (name === 'localhost' || name === '::1') return true;
  return isIP(name) === 4 && name.startsWith('127.');
}

/**
 * The guard's verdict on a request from its method and headers: the problem to refuse it with, or
 * undefined. Shared by the express middleware and the plain intake handler (api/intake.ts).
 */
export function guardCheck(opts: { tokens: boolean; allowedHosts: string[] }): (method: string, headers: IncomingHttpHeaders) => HttpProblem | undefined {
  const allowed = new Set(opts.allowedHosts.map((h) => h.toLowerCase()));
  return (method, headers) => {
    const host = headers.host;
    if (!opts.tokens && host !== undefined) {
      // A request without Host (HTTP/1.0) cannot come from a browser, which always sends one.
      const name = hostName(host);
      if (name === undefined || !(isLoopbackName(name) || allowed.has(name))) {
        return new HttpProblem(421, 'Misdirected request', `this API answers only for loopback host names without tokens; "${host.slice(0, 100)}" is not one (the operator can list more in KVMQ_ALLOWED_HOSTS)`);
      }
    }
    if (SAFE.has(method)) return undefined;
    const origin = headers.origin;
    if (origin !== undefined) {
      let same = false;
      try {
        same = origin !== 'null' && new URL(origin).host === (host ?? '').toLowerCase();
      } catch {
        same = false;
      }
      if (!same) return new HttpProblem(403, 'Cross-origin request refused', `a browser page from ${origin.slice(0, 100)} may not change anything here; use the dashboard on this origin or a client outside the browser`);
      return undefined;
    }
    // Without Origin, fetch metadata still tells a browser's cross-site request apart.
    // Node joins repeated headers into one string (only set-cookie stays a list).
    const site = headers['sec-fetch-site'] as string | undefined;
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      return new HttpProblem(403, 'Cross-origin request refused', `Sec-Fetch-Site is "${site.slice(0, 40)}"; only same-origin browser requests may change anything here`);
    }
    return undefined;
  };
}
