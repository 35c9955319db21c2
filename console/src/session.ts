// Who the console speaks for. The token arrives in the URL fragment (`grantd token
// --console`), which browsers never send to a server, or is pasted; it is kept in this
// tab's session storage only, and the fragment is cleared at once.

const STORAGE_KEY = "grantd.token";
const ADMIN_SCOPE = "grants:admin";

export interface Claims {
  subject: string;
  admin: boolean;
  /** Organizations the token may act in; all when absent. */
  organizations?: string[];
  /** Seconds since the epoch. */
  expiresAt?: number;
}

export function takeTokenFromFragment(): void {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    sessionStorage.setItem(STORAGE_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

export function storedToken(): string | null {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function storeToken(token: string): void {
  sessionStorage.setItem(STORAGE_KEY, token.trim());
}

export function forgetToken(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** What the token says of its holder; the server decides, this only shapes the page. */
export function claimsOf(token: string): Claims | null {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
    const scopes = [
      ...(typeof claims.scope === "string" ? claims.scope.split(" ") : []),
      ...(Array.isArray(claims.scp) ? claims.scp : typeof claims.scp === "string" ? claims.scp.split(" ") : []),
    ];
    return {
      subject: String(claims.sub ?? ""),
      admin: scopes.includes(ADMIN_SCOPE),
      organizations: Array.isArray(claims.orgs) ? claims.orgs.map(String) : undefined,
      expiresAt: typeof claims.exp === "number" ? claims.exp : undefined,
    };
  } catch {
    return null;
  }
}

/** A server run with `--insecure-no-auth` (or `--dev`) treats every caller as an administrator. */
export const NO_AUTH: Claims = { subject: "anonymous", admin: true };
