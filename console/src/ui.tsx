import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import type { Problem } from "./rpc.ts";

export function ProblemNote({ problem }: { problem: Problem | null }) {
  if (!problem) return null;
  return (
    <p class="problem" role="alert">
      <strong>{problem.summary}.</strong> {problem.message} <span class="code">({problem.code})</span>
    </p>
  );
}

export function Notice({ text }: { text: string | null }) {
  return text ? (
    <p class="notice" role="status">
      {text}
    </p>
  ) : null;
}

/** A modal question: Escape or Cancel says no, focus starts on Cancel. */
export function Confirm(props: {
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    dialog.current?.showModal();
    cancel.current?.focus();
  }, []);
  return (
    <dialog ref={dialog} class="confirm" aria-labelledby="confirm-title" onCancel={props.onCancel}>
      <h2 id="confirm-title">{props.title}</h2>
      <div>{props.children}</div>
      <div class="actions">
        <button type="button" ref={cancel} onClick={props.onCancel}>
          Cancel
        </button>
        <button type="button" class="danger" onClick={props.onConfirm}>
          {props.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

export function TrashIcon() {
  return (
    <svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true">
      <path
        fill="currentColor"
        d="M6 1h4l1 1h3v2H2V2h3l1-1zm-3 4h10l-1 10H4L3 5zm3 2v6h1V7H6zm3 0v6h1V7H9z"
      />
    </svg>
  );
}

export function describeResource(resource: { type: string; id: string } | undefined): string {
  if (!resource || resource.type === "organization") return "the whole organization";
  return `${resource.type} ${resource.id}`;
}
