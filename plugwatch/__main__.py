from plugwatch.cli import main

if __name__ == "__main__":  # not when a report build process (spawned) imports it as __mp_main__
    main()
