"""Pictures of captured exchanges: SVG ladder diagrams, small plots, and the HTML pages that hold them.

Pure, like the analysis it draws: it takes `Connection`s (or plain data) and returns text (SVG, HTML);
it reads and writes no file, so it runs without root and is unit-tested on crafted packets and saved
captures. The callers (the claim report, `verifier show --html`, the pytest plugin) do the I/O.

    from verifier.draw import ladder, render_svg
    svg = render_svg(ladder(conn))            # one connection: client, router, server as columns
"""

from verifier.draw.ladder import Arrow, CallMark, Ladder, ladder, render_svg

__all__ = ["Arrow", "CallMark", "Ladder", "ladder", "render_svg"]
