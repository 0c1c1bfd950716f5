# Sourced by demo.sh and learn_sft.sh: start `ores serve` (the embedded SmolLM2 on the CPU) in the
# background on port $1, logging to $2; wait until it is ready, export the OPENAI_BASE_URL,
# ORES_LLM_MODEL and ORES_LLM_JSON_MODE it prints, and stop it however the calling script ends
# (`ores serve` stops its server process with it on SIGTERM; a background job ignores SIGINT).
# Needs $ORES. Sets $SERVER to its pid; `stop_embedded_server` stops it early.
start_embedded_server() {
    local port="$1" log="$2"
    $ORES serve --port "$port" 2> "$log" &
    SERVER=$!
    trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
    until grep -q "Ctrl-C to stop" "$log"; do
        if ! kill -0 "$SERVER" 2>/dev/null; then
            cat "$log" >&2
            echo "$(basename "$0"): ores serve did not start (log above)" >&2
            exit 1
        fi
        sleep 1
    done
    grep -E "ready:|export " "$log"
    eval "$(grep -E '^ *export ' "$log")"
}

stop_embedded_server() {
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    trap - EXIT
}
