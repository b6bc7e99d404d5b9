// The one way the UI talks to the agent: the generated commands, with
// failures turned into exceptions that carry the agent's stable code.
import type { ApiError } from "../bindings";

type Outcome<T> = { status: "ok"; data: T } | { status: "error"; error: ApiError };

export class CommandError extends Error {
  code: string;
  constructor(e: ApiError) {
    super(e.message);
    this.code = e.code;
  }
}

export async function ok<T>(r: Promise<Outcome<T>>): Promise<T> {
  const x = await r;
  if (x.status === "ok") return x.data;
  throw new CommandError(x.error);
}

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
