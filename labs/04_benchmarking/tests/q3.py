OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [{'code': '>>> from helpers.course.checks import lab04, say\n>>> say(lab04.q3(predicted_speedup, why_not))\n', 'hidden': False, 'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
