// RFC 9457 problem details. Every error the API gives is one of these, with a JSON pointer per problem
// for bad input, and never a stack trace.
import type { Response } from 'express';
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
