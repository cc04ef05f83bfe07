// The CLI's side of the HTTP API: a client typed from the OpenAPI document (openapi-fetch over the types
// openapi-typescript generated into api-types.ts), so every CLI call goes through the published
// contract. Failures become errors whose class says what happened, and main.ts turns that into the
// exit code.
import createClient from 'openapi-fetch';
import type { paths } from './api-types.ts';
import { clientConfig } from '../config.ts';

/** The API answered a 4xx: the request itself was refused (bad spec, unknown id, missing token). */
export class ApiRefused extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

/** The API could not be reached, or answered 5xx. */
export class ApiUnavailable extends Error {}

export const apiUrl = () => clientConfig().url;

export type Client = ReturnType<typeof createClient<paths>>;

export function apiClient(base = apiUrl(), token = clientConfig().token): Client {
  return createClient<paths>({
    baseUrl: base,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    fetch: async (req: Request) => {
      try {
        return await fetch(req);
      } catch (err) {
        const why = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message;
        throw new ApiUnavailable(`cannot reach the kvmq API at ${base} (${why}); start it with "kvmq dev" or set KVMQ_URL`);
      }
    },
  });
}

/** The body of a successful answer, or an error naming the problem (and each JSON pointer in it). */
export async function ok<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok) return data as T;
  const p = (typeof error === 'object' && error ? error : {}) as { title?: string; detail?: string; errors?: { pointer?: string; detail?: string }[] };
  const lines = [`${response.status} ${p.title ?? response.statusText}${p.detail && !p.errors ? `: ${p.detail}` : ''}`];
  for (const e of p.errors ?? []) lines.push(`  ${e.pointer || '/'}: ${e.detail}`);
  if (response.status >= 500) throw new ApiUnavailable(lines.join('\n'));
  throw new ApiRefused(lines.join('\n'), response.status);
}

/**
 * An untyped call for a route the generated types do not know yet (a command written against a newer
 * API); answers the parsed JSON (or undefined) and the text.
 */
export async function rawCall(client: Client, method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string }> {
  const res = await ok((client as any)[method.toUpperCase()](path, { ...(body !== undefined ? { body } : {}), parseAs: 'text' }) as Promise<{ data?: string; error?: unknown; response: Response }>);
  let json: any;
  try {
    json = JSON.parse(res ?? '');
  } catch {
    json = undefined;
  }
  return { status: 200, json, text: res ?? '' };
}

/** What `callApi` answers: the status, the content type, the text, and its JSON when it is JSON. */
export interface Answer {
  status: number;
  type: string;
  body: any;
  text: string;
}

/**
 * One untyped call: a body is sent as JSON (a string as it is, so a test can send broken JSON), and any
 * answer comes back, 4xx and 5xx included. The bench and the tests call the API through this; the
 * commands go through the typed client above. Node's fetch keeps connections alive between calls.
 */
export async function callApi(base: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(base + p, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: any;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: parsed, text };
}
