/** The only links the console opens from untrusted output: http: and https:. */
export function safeLink(uri: string): string | undefined {
  try {
    const u = new URL(uri);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : undefined;
  } catch {
    return undefined;
  }
}
