OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [{'code': '>>> from helpers.course.checks import lab04, say\n>>> say(lab04.q2(best_concurrency, best_goodput, load_records))\n', 'hidden': False, 'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
