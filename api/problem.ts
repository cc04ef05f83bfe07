// RFC 9457 problem details. Every error the API gives is one of these, with a JSON pointer per problem
// for bad input, and never a stack trace.
import type { Request, Response } from 'express';
import type { z } from 'zod';
import { capText } from '../src/errors.ts';

export interface ProblemItem {
  pointer: string;
  detail: string;
}

export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail?: string,
    readonly errors?: ProblemItem[],
  ) {
    super(detail ?? title);
  }
}

/** The content type of every problem answer, as express completes the type sendProblem names (test/intake.test.ts). */
export const PROBLEM_TYPE = 'application/problem+json; charset=utf-8';

/** The body of a problem answer, as both the express app and the plain intake handler send it. */
export function problemBody(p: HttpProblem, instance?: string): string {
  return JSON.stringify({
    type: 'about:blank',
    title: p.title,
    status: p.status,
    ...(p.detail ? { detail: p.detail } : {}),
    ...(instance ? { instance } : {}),
    ...(p.errors ? { errors: p.errors } : {}),
  });
}

export function sendProblem(res: Response, p: HttpProblem, instance?: string): void {
  res.status(p.status).type('application/problem+json').send(problemBody(p, instance));
}

/**
 * The problem to answer for an error a request ended in: its own for an HttpProblem, a clear 4xx for the
 * body parser's errors (each carries a status and a type), undefined for anything else (a 500, logged).
 */
export function problemOf(err: unknown): HttpProblem | undefined {
  if (err instanceof HttpProblem) return err;
  const e = err as { type?: string; status?: number; message?: string } | null;
  if (!e || typeof e !== 'object') return undefined;
  if (e.type === 'entity.parse.failed') return new HttpProblem(400, 'Malformed JSON', e.message);
  if (e.type === 'entity.too.large') return new HttpProblem(413, 'Body too large', 'the limit is 1 MiB');
  if (e.type === 'charset.unsupported' || e.type === 'encoding.unsupported') return new HttpProblem(415, 'Unsupported encoding', e.message);
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return new HttpProblem(e.status, 'Bad request', e.message);
  return undefined;
}

/** The answer to an error that is no client's fault; what went wrong is logged, never sent. */
export const INTERNAL_PROBLEM = new HttpProblem(500, 'Internal error', 'the error is logged on the server');

export function pointer(path: readonly PropertyKey[]): string {
  return path.length ? '/' + path.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/') : '';
}

/** Turn zod issues into pointer + detail pairs, naming unknown keys one by one. */
export function zodProblems(error: z.ZodError, base = ''): ProblemItem[] {
  const out: ProblemItem[] = [];
  for (const issue of error.issues) {
    const at = base + pointer(issue.path);
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) out.push({ pointer: `${at}${pointer([k])}`, detail: `unknown field "${k}"` });
    } else if (issue.code === 'invalid_union' && 'errors' in issue && Array.isArray(issue.errors) && issue.errors.length) {
      // A union explains itself best through the branch that got furthest.
      const best = [...issue.errors].sort((a, b) => deepest(b) - deepest(a))[0]!;
      for (const sub of best) out.push({ pointer: at + pointer(sub.path), detail: sub.message });
    } else {
      out.push({ pointer: at, detail: issue.message });
    }
  }
  return out;
}

function deepest(issues: { path: readonly PropertyKey[] }[]): number {
  return Math.max(0, ...issues.map((i) => i.path.length));
}

export function validationProblem(error: z.ZodError, what: string, base = ''): HttpProblem {
  // An unknown key is echoed back by name: a huge key or a thousand of them must not make a huge answer.
  const errors = zodProblems(error, base).slice(0, 100).map((e) => ({ pointer: capText(e.pointer, 512), detail: capText(e.detail, 1024) }));
  return new HttpProblem(400, `Invalid ${what}`, capText(errors.map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; ')), errors);
}

/**
 * A POST's body through its schema, the single source of validation: a 415 when it is not JSON (`send
 * the NOUN as application/json`), a 400 naming each bad field (`Invalid WHAT`).
 */
export function parseJsonBody<S extends z.ZodType>(req: Request, schema: S, noun: string, what = noun): z.output<S> {
  return validBody(jsonBody(req, noun), schema, what);
}

/** A POST's parsed JSON body, or a 415 when it was not sent as JSON (`send the NOUN as application/json`). */
export function jsonBody(req: Request, noun: string): unknown {
  if (!req.is('application/json')) throw new HttpProblem(415, 'Unsupported media type', `send the ${noun} as application/json`);
  return req.body;
}

/** A parsed body through its schema: the data, or a 400 naming each bad field (`Invalid WHAT`). */
export function validBody<S extends z.ZodType>(body: unknown, schema: S, what: string): z.output<S> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw validationProblem(parsed.error, what);
  return parsed.data;
}

/** A GET's query string through its schema: a 400 `Invalid query` naming each bad parameter under /query. */
export function parseQuery<S extends z.ZodType>(req: Request, schema: S): z.output<S> {
  const parsed = schema.safeParse(req.query);
  if (!parsed.success) throw validationProblem(parsed.error, 'query', '/query');
  return parsed.data;
}

/** Problems found in a part of a body, with their pointers made relative to the whole (`/spec`, `/experiments/2`). */
export function under(prefix: string, problems: ProblemItem[]): ProblemItem[] {
  return problems.map((p) => ({ pointer: `${prefix}${p.pointer}`, detail: p.detail }));
}

/** A 400 titled TITLE listing every problem by its pointer; nothing when there is none. */
export function refuseIfAny(title: string, problems: ProblemItem[]): void {
  if (problems.length) throw new HttpProblem(400, title, problems.map((p) => `${p.pointer}: ${p.detail}`).join('; '), problems);
}
