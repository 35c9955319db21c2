import { useEffect, useState } from "preact/hooks";
import { connect, problemOf, allPages, type Clients, type Problem } from "./rpc.ts";
import { claimsOf, forgetToken, NO_AUTH, storedToken, storeToken, type Claims } from "./session.ts";
import { Organization } from "./Organization.tsx";
import { ProblemNote } from "./ui.tsx";

/** Signed in: the token, what it claims, the clients. */
export interface Session {
  /** Null on a server that asks for none (`--insecure-no-auth`, `--dev`). */
  token: string | null;
  claims: Claims;
  clients: Clients;
  /** Called when the server no longer accepts the token. */
  signOut: (problem?: Problem) => void;
}

export function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [probing, setProbing] = useState(true);

  const signOut = (why?: Problem) => {
    forgetToken();
    setSession(null);
    setProblem(why ?? null);
  };

  const signIn = async (token: string | null) => {
    const clients = connect(token);
    try {
      // One cheap call tells whether the server accepts this token (or needs none).
      await clients.directory.listPermissions({ pageSize: 1 });
      const claims = token ? claimsOf(token) : NO_AUTH;
      if (!claims) throw new Error("this is not a JSON Web Token");
      setSession({ token, claims, clients, signOut });
      setProblem(null);
    } catch (err) {
      if (token) forgetToken();
      setProblem(token || problemOf(err).code !== "Unauthenticated" ? problemOf(err) : null);
    }
  };

  useEffect(() => {
    signIn(storedToken()).finally(() => setProbing(false));
  }, []);

  if (probing) return <p>Connecting…</p>;
  if (!session) {
    return (
      <SignIn
        problem={problem}
        onToken={(token) => {
          storeToken(token);
          signIn(token);
        }}
      />
    );
  }
  return (
    <>
      <header class="bar">
        <h1>grantd console</h1>
        <span>
          Signed in as <strong>{session.claims.subject}</strong>
          {session.claims.admin ? " (administrator)" : ""}
        </span>
        {session.token && (
          <button type="button" onClick={() => signOut()}>
            Sign out
          </button>
        )}
      </header>
      <main>
        <Organizations session={session} />
      </main>
    </>
  );
}

function SignIn({ problem, onToken }: { problem: Problem | null; onToken: (token: string) => void }) {
  const [token, setToken] = useState("");
  return (
    <main class="sign-in">
      <h1>grantd console</h1>
      <ProblemNote problem={problem} />
      <form
        onSubmit={(event) => {
          event.preventDefault();
          if (token.trim()) onToken(token.trim());
        }}
      >
        <label for="token">Bearer token</label>
        <textarea id="token" rows={4} value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        <p class="hint">
          Mint one with <code>grantd token --subject YOU --console</code>, which prints a link that signs you in. The
          token stays in this tab only.
        </p>
        <button type="submit">Sign in</button>
      </form>
    </main>
  );
}

/** Administrators see every organization (or their token's); others the ones they belong to. */
function Organizations({ session }: { session: Session }) {
  const { claims, clients } = session;
  const [organizations, setOrganizations] = useState<string[] | null>(null);
  const [chosen, setChosen] = useState("");
  const [problem, setProblem] = useState<Problem | null>(null);

  useEffect(() => {
    const load = async () => {
      if (claims.organizations) return claims.organizations;
      if (claims.admin) {
        return allPages(async (pageToken) => {
          const page = await clients.directory.listOrganizations({ pageSize: 1000, pageToken });
          return { items: page.organizations.map((o) => o.id), next: page.nextPageToken };
        });
      }
      return allPages(async (pageToken) => {
        const page = await clients.directory.listUserOrganizations({ userId: claims.subject, pageSize: 1000, pageToken });
        return { items: page.memberships.map((m) => m.organizationId), next: page.nextPageToken };
      });
    };
    load()
      .then((ids) => {
        setOrganizations(ids);
        if (ids.length === 1) setChosen(ids[0]);
      })
      .catch((err) => {
        const p = problemOf(err);
        if (p.unauthenticated) session.signOut(p);
        setProblem(p);
      });
  }, []);

  if (problem) return <ProblemNote problem={problem} />;
  if (!organizations) return <p>Loading organizations…</p>;
  if (organizations.length === 0) return <p>You belong to no organization.</p>;
  return (
    <>
      <div class="field">
        <label for="organization">Organization</label>
        <select id="organization" value={chosen} onChange={(e) => setChosen(e.currentTarget.value)}>
          <option value="">Choose…</option>
          {organizations.map((id) => (
            <option value={id} key={id}>
              {id}
            </option>
          ))}
        </select>
      </div>
      {chosen && <Organization key={chosen} session={session} organizationId={chosen} />}
    </>
  );
}
