"""Publish an existing export (a pretrain output_dir or a save_pretrained folder) to the Hugging Face Hub.

    python scripts/push_to_hub.py OUTPUT_DIR org/name [--revision BRANCH] [--create-pr] [--private]
                                  [--commit-message MSG]

Uploads config.json, model.safetensors, projector.safetensors, the model card (re-rendered for org/name) and PNG
plots, in one commit; checkpoints/, metrics.jsonl and any pickle are never uploaded. Authentication: `hf auth login`
or HF_TOKEN (never written to a file or a log). HF_ENDPOINT points it at another Hub server.
"""

from __future__ import annotations

import argparse

from spectral_ssl import hub


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="export folder (holds config.json + model.safetensors)")
    p.add_argument("repo_id", help="Hub model repo, org/name (created if missing)")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request (against --revision, default main) "
                   "instead of committing to the branch")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--commit-message", default=None)
    args = p.parse_args(argv)
    try:
        url = hub.push_export(args.output_dir, args.repo_id, revision=args.revision, private=args.private or None,
                              commit_message=args.commit_message, create_pr=args.create_pr)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"pushed {args.output_dir} to {args.repo_id}: {url}")
    return url


if __name__ == "__main__":
    main()
