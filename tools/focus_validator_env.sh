#!/usr/bin/env bash
# Builds .venv-focus: the official focus-validator (tools/focus-validator-requirements.txt) in a venv of its own,
# since its 2.x releases need Python 3.12+ while kimiplan runs on 3.11. Looks for the interpreter on PATH, then
# in pyenv's versions directory (the lowest 3.12+ first). Without one it says so and exits 0: tests/test_focus.py then skips the official
# validator with that reason. Usage: tools/focus_validator_env.sh [VENV_DIR]   (default .venv-focus)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-focus}"
req=tools/focus-validator-requirements.txt
stamp="$venv/.installed"
if [[ -f "$stamp" && "$stamp" -nt "$req" && -x "$venv/bin/focus-validator" ]]; then
    exit 0
fi

ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
python=""
# 3.12 first: the validator pins numpy<2, and numpy 1.26 has wheels up to 3.12 only (3.13 would build it).
for c in python3.12 python3.13 python3.14 python3; do
    if p="$(command -v "$c")" && ok "$p"; then python="$p"; break; fi
done
if [[ -z "$python" ]]; then
    for p in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do
        if ok "$p"; then python="$p"; break; fi
    done
fi
if [[ -z "$python" ]]; then
    echo "focus-validator: no Python 3.12+ on PATH or in ${PYENV_ROOT:-$HOME/.pyenv}/versions; not installed" \
        "(the official-validator test will skip)"
    exit 0
fi

echo "installing focus-validator into $venv with $("$python" --version) ($python)"
start=$SECONDS
rm -rf "$venv"
"$python" -m venv "$venv"
# (the grep drops this machine's notes about absent local index directories, which are not problems)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" 2> >(grep -v "is ignored: it is neither" >&2)
touch "$stamp"
echo "focus-validator $("$venv/bin/python" -m pip show focus-validator | sed -n 's/^Version: //p') ready in" \
    "$((SECONDS - start)) s"
