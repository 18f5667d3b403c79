"""wsgiws echo (examples.echo:app of the wsgiws checkout) on gevent.pywsgi."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import parse_args  # noqa: E402


def main():
    args = parse_args(__doc__.splitlines()[0])
    root = os.path.abspath(args.wsgiws or os.path.join(os.path.dirname(__file__), "..", ".."))
    sys.path.insert(0, root)
    from gevent.pywsgi import WSGIServer

    from examples.echo import app  # the wsgiws example the benchmark serves

    WSGIServer((args.host, args.port), app, log=None, backlog=2048).serve_forever()


if __name__ == "__main__":
    main()
