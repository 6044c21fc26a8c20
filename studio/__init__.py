"""GradNetOT Studio's app side: everything that draws with Streamlit, over the pure library ``gradnet_core``.

Pages (``pages/*.py``) collect widget values, call these modules and draw what comes back:

- ``navigation``: the list of pages (read by ``app.py``) and ``page_header``, which every page calls
  first: layout, tab title, menu, heading. Its docstring says why links work on a fresh server.
- ``state``: what a page keeps in the session (``PageState``) and the life of its training job
  (``start_job``, ``is_training``).
- ``jobs``: ``TrainingJob``, a training observed through snapshots; ``execute``, what a training does.
- ``scheduler``: the server's training slots and queue, its workers and its memory housekeeping.
- ``workers``: the worker processes trainings run in (``ray_workers``: Ray actors, with a cluster).
- ``problems``: a 2-D transport problem, its ground truth and its evaluated runs; widget values to
  densities. No Streamlit.
- ``inputs``: the widgets that set a problem up: Gaussian sliders, mixture tables, digit examples,
  canvas and uploads, colour pictures.
- ``panels``: the training panels (settings, Train, the live progress panel) and the results panels.

Data for a run walks down once: page -> ``inputs`` (a ``Problem``) -> ``panels`` -> ``state.start_job``
-> ``jobs.TrainingJob`` -> a worker process -> ``jobs.execute`` -> ``gradnet_core.train``, and back up as
the result ``state`` files for ``panels`` to draw.
"""
