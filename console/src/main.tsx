import { render } from "preact";
import { App } from "./App.tsx";
import { takeTokenFromFragment } from "./session.ts";

takeTokenFromFragment();
const root = document.getElementById("app");
if (root) render(<App />, root);
