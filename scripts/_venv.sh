# Sourced by scripts/test and scripts/demo: make sure .venv exists and holds this project
# with its test extra. pip runs only when pyproject.toml changed since the last install
# (its sha256 is kept in .venv/.pyproject.sha256).
# Usage: source scripts/_venv.sh; ensure_venv    (from the project root)

ensure_venv() {
    local venv=.venv
    local stamp="$venv/.pyproject.sha256"
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "worktree_runner needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv" >&2
        python3 -m venv "$venv"
    fi
    local wanted
    wanted=$("$venv/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
        pyproject.toml)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        echo "installing worktree_runner and its test tools into $venv" >&2
        # pip's build warnings are noise when all goes well: show its log only on failure.
        if ! "$venv/bin/pip" install -q -e '.[test]' >"$venv/pip-install.log" 2>&1; then
            cat "$venv/pip-install.log" >&2
            echo "pip install failed (log: $venv/pip-install.log)" >&2
            return 1
        fi
        echo "$wanted" >"$stamp"
    fi
}
