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

export function sendProblem(res: Response, p: HttpProblem, instance?: string): void {
  res
    .status(p.status)
    .type('application/problem+json')
    .send(
      JSON.stringify({
        type: 'about:blank',
        title: p.title,
        status: p.status,
        ...(p.detail ? { detail: p.detail } : {}),
        ...(instance ? { instance } : {}),
        ...(p.errors ? { errors: p.errors } : {}),
      }),
    );
}

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
  if (!req.is('application/json')) throw new HttpProblem(415, 'Unsupported media type', `send the ${noun} as application/json`);
  const parsed = schema.safeParse(req.body);
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
