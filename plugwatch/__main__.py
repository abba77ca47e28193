from plugwatch.cli import main

if __name__ == "__main__":  # not when a spawned child process (multiprocessing) imports it as __mp_main__
    main()
