# Sourced by .ci/run: a throwaway PostgreSQL on 127.0.0.1 for the shared-study search test.
# Exports MMREG_TEST_POSTGRES_URL when a server runs; otherwise says why and leaves it unset
# (that test is then skipped with its reason). Installs Debian's postgresql when absent.

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
    if [ -n "${MMREG_TEST_POSTGRES_URL:-}" ]; then return 0; fi
    if [ -z "$(pg_bin)" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then  # lists first: a new machine may have none
        (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql) </dev/null >/tmp/mmreg-apt-postgres.log 2>&1 \
            || echo "ci: installing postgresql failed (see /tmp/mmreg-apt-postgres.log)"
    fi
    local bin; bin="$(pg_bin)"
    if [ -z "$bin" ]; then echo "ci: no PostgreSQL here; the shared-study test will be skipped"; return 0; fi
    local dir port run=()
    dir="$(mktemp -d /tmp/mmreg-pg.XXXXXX)"
    port=$((20000 + RANDOM % 20000))
    if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root: run it as an unprivileged user
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres >/dev/null 2>&1 || true
        if ! chown postgres "$dir" 2>/dev/null; then
            echo "ci: no unprivileged user to run PostgreSQL as; the shared-study test will be skipped"
            return 0
        fi
        run=(runuser -u postgres --)
    fi
    if "${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U mmreg >"$dir/initdb.log" 2>&1 \
        && "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >/dev/null \
        && "$bin/createdb" -h 127.0.0.1 -p "$port" -U mmreg mmreg_test; then
        export MMREG_TEST_POSTGRES_URL="postgresql://mmreg@127.0.0.1:$port/mmreg_test"
        MMREG_PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
        echo "ci: PostgreSQL on 127.0.0.1:$port"
    else
        echo "ci: PostgreSQL did not start (logs in $dir); the shared-study test will be skipped"
    fi
}

stop_postgres() {
    if [ -n "${MMREG_PG_STOP+x}" ]; then "${MMREG_PG_STOP[@]}" >/dev/null 2>&1 || true; fi
}
