import sys

try:
    # Ctrl-C can come while the modules still load, before the CLI's own handler is set
    from worktree_runner.cli import main

    main()
except KeyboardInterrupt:
    print("wtr: interrupted", file=sys.stderr)
    sys.exit(130)
