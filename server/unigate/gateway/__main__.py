from unigate.gateway.cli import main

raise SystemExit(main())
