"""Cell-output helpers shared by tools/run_notebook.sh and tools/refresh_outputs.py."""


def merge_streams(outputs: list) -> list:
    "A streamed print arrives in many pieces: one output per stream (stdout, stderr) in a row, as a reader would see it."
    merged = []
    for o in outputs:
        if merged and o.get("output_type") == "stream" == merged[-1].get("output_type") and o["name"] == merged[-1]["name"]:
            merged[-1]["text"] = ("".join(merged[-1]["text"]) + "".join(o["text"])).splitlines(True)
        else: merged.append(o)
    return merged
